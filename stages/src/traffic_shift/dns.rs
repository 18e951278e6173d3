//! A small authoritative DNS server for the embedded weighted zone, so
//! `dig @127.0.0.1 -p 5353 www.catsndogs.lol` answers blue or green in proportion to the
//! weights, as Route 53 does for the seed's weighted records.
//!
//! It answers `A` (and `AAAA`) queries for each served record with blue's or green's addresses
//! as [`WeightStore::pick`] decides, NXDOMAIN for other names in the zone (no data at the
//! apex), and REFUSED for names outside it; every answer is authoritative, over UDP and TCP on
//! the same port. The protocol work (framing, truncation, TCP timeouts) is `hickory-server`'s.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use cutover_stages::traffic_shift::dns::LocalDnsServer;
//! use cutover_stages::traffic_shift::local::{RecordSpec, WeightStore};
//! use cutover_stages::traffic_shift::Weights;
//!
//! let spec = RecordSpec {
//!     zone: "catsndogs.lol".into(),
//!     record: "www.catsndogs.lol".into(),
//!     blue: vec!["127.0.0.1".parse().unwrap()],
//!     green: vec!["127.0.0.2".parse().unwrap()],
//!     ttl: 5,
//! };
//! let store = WeightStore::open(spec, ".cutover/traffic/www.catsndogs.lol.json")?;
//! let server = LocalDnsServer::start("127.0.0.1:5353".parse().unwrap(), store.clone())?;
//! store.set(Weights::green(10))?; // visible to the next query
//! println!("dig @{} -p {} www.catsndogs.lol", server.local_addr().ip(), server.local_addr().port());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::weights::{Side, WeightStore};

/// A running embedded DNS server. Dropping it stops it; [`shutdown`](Self::shutdown) also waits
/// until the port is free again.
#[derive(Debug)]
pub struct LocalDnsServer {
    local_addr: SocketAddr,
    zones: Arc<Zones>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Zones {
    stores: RwLock<Vec<Arc<WeightStore>>>,
}

impl LocalDnsServer {
    /// Starts serving `store`'s record on `addr` (UDP and TCP; port 0 picks a free one). Call
    /// from within a Tokio runtime. A port already in use is an `AddrInUse` error.
    pub fn start(addr: SocketAddr, store: Arc<WeightStore>) -> io::Result<Arc<Self>> {
        let (udp, tcp) = bind_pair(addr)?;
        let local_addr = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;

        let zones = Arc::new(Zones::default());
        zones.add(store);
        let mut server = hickory_server::Server::new(Handler { zones: zones.clone() });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::select! {
                result = server.block_until_done() => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "embedded DNS server stopped");
                    }
                }
                _ = stopped => {}
            }
            let _ = server.shutdown_gracefully().await;
        });
        tracing::info!(%local_addr, "embedded DNS server listening");
        Ok(Arc::new(Self {
            local_addr,
            zones,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        }))
    }

    /// The server listening on `addr` in this process, now also serving `store`'s record; or a
    /// new one. Lets several stages (and rebuilt pipelines) share one port.
    pub fn shared(addr: SocketAddr, store: Arc<WeightStore>) -> io::Result<Arc<Self>> {
        static RUNNING: OnceLock<Mutex<HashMap<SocketAddr, Weak<LocalDnsServer>>>> = OnceLock::new();
        let mut running = RUNNING
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.retain(|_, server| server.strong_count() > 0);
        if let Some(server) = running.get(&addr).and_then(Weak::upgrade)
            && !server.is_stopped()
        {
            server.zones.add(store);
            return Ok(server);
        }
        // Port 0 starts a new server on a free port, shared from then on under its address.
        let server = Self::start(addr, store)?;
        running.insert(server.local_addr(), Arc::downgrade(&server));
        Ok(server)
    }

    /// Where it listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Also serves `store`'s record (replacing a store of the same name).
    pub fn serve(&self, store: Arc<WeightStore>) {
        self.zones.add(store);
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn shutdown(&self) {
        self.signal_stop();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn signal_stop(&self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
    }

    fn is_stopped(&self) -> bool {
        self.stop.lock().map(|s| s.is_none()).unwrap_or(true)
    }
}

impl Drop for LocalDnsServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Every store an embedded DNS server of this process answers from, newest last.
fn served() -> &'static Mutex<Vec<Weak<WeightStore>>> {
    static SERVED: OnceLock<Mutex<Vec<Weak<WeightStore>>>> = OnceLock::new();
    SERVED.get_or_init(Default::default)
}

/// The weights an embedded DNS server of this process answers `record` from (the newest, when
/// several did): its [`WeightStore::answer_counts`] say how the answers actually split, which
/// the `observed-split` health probe compares with the weights set.
pub fn served_store(record: &str) -> Option<Arc<WeightStore>> {
    let record = super::local::normalise(record);
    let mut served = served().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    served.retain(|s| s.strong_count() > 0);
    served
        .iter()
        .rev()
        .filter_map(Weak::upgrade)
        .find(|s| s.spec().record == record)
}

impl Zones {
    fn add(&self, store: Arc<WeightStore>) {
        served()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::downgrade(&store));
        let mut stores = self
            .stores
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.retain(|s| s.spec().record != store.spec().record);
        stores.push(store);
    }

    /// The answer to one question: a response code and the records.
    fn answer(&self, name: &LowerName, rtype: RecordType) -> (ResponseCode, Vec<Record>) {
        let text = super::local::normalise(&name.to_string());
        let stores = self
            .stores
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = stores.iter().find(|s| s.spec().record == text) {
            if !matches!(rtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
                return (ResponseCode::NoError, Vec::new());
            }
            let spec = store.spec();
            let addresses = match store.pick() {
                Side::Blue => &spec.blue,
                Side::Green => &spec.green,
            };
            let owner = Name::from(name.clone());
            let records = addresses
                .iter()
                .filter(|ip| match rtype {
                    RecordType::A => ip.is_ipv4(),
                    RecordType::AAAA => ip.is_ipv6(),
                    _ => true,
                })
                .map(|ip: &IpAddr| Record::from_rdata(owner.clone(), spec.ttl, RData::from(*ip)))
                .collect();
            return (ResponseCode::NoError, records);
        }
        // The apex exists (it would hold the SOA), so it has no data rather than no name.
        if stores.iter().any(|s| text == s.spec().zone) {
            return (ResponseCode::NoError, Vec::new());
        }
        let in_zone = stores
            .iter()
            .any(|s| text.ends_with(&format!(".{}", s.spec().zone)));
        if in_zone {
            (ResponseCode::NXDomain, Vec::new())
        } else {
            (ResponseCode::Refused, Vec::new())
        }
    }
}

struct Handler {
    zones: Arc<Zones>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let (code, answers) = match (request.metadata.op_code, request.request_info()) {
            (OpCode::Query, Ok(info)) => self.zones.answer(info.query.name(), info.query.query_type()),
            (OpCode::Query, Err(_)) => (ResponseCode::FormErr, Vec::new()),
            _ => (ResponseCode::NotImp, Vec::new()),
        };
        metadata.response_code = code;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &request.edns {
            builder.edns(edns);
        }
        let response = builder.build(metadata, answers.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "cannot send a DNS response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Asks `server` for the `A`/`AAAA` address of `name` over UDP, the way `dig` does; `None` when
/// the answer holds no address. For the demo and for checking a zone from code.
pub async fn query_address(server: SocketAddr, name: &str) -> io::Result<Option<IpAddr>> {
    use hickory_proto::op::{Message, MessageType, Query};
    let bind = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    let name: Name = name
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
    let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name, RecordType::A));
    let bytes = query.to_vec().map_err(io::Error::other)?;
    socket.send_to(&bytes, server).await?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no DNS answer within 2 s"))??;
    let answer = Message::from_vec(&buf[..n]).map_err(io::Error::other)?;
    Ok(answer.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }))
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A UDP socket and a TCP listener on the same port, so resolvers falling back to TCP after
/// truncation find us. With port 0 the kernel picks the UDP port, which another process may
/// already hold for TCP: then another port is tried, a few times.
fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(addr)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, Query};

    use super::*;
    use crate::traffic_shift::Weights;
    use crate::traffic_shift::local::RecordSpec;

    fn spec() -> RecordSpec {
        RecordSpec {
            zone: "catsndogs.lol".into(),
            record: "www.catsndogs.lol".into(),
            blue: vec!["127.0.0.1".parse().unwrap()],
            green: vec!["127.0.0.2".parse().unwrap(), "::2".parse().unwrap()],
            ttl: 5,
        }
    }

    async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut query = Message::new(7, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(name.parse().unwrap(), rtype));
        socket.send_to(&query.to_vec().unwrap(), server).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    #[tokio::test]
    async fn answers_the_record_nxdomain_in_zone_refused_outside() {
        let dir = tempfile::tempdir().unwrap();
        let store = WeightStore::open(spec(), dir.path().join("w.json")).unwrap();
        store.set(Weights::green(100)).unwrap();
        let server = LocalDnsServer::start("127.0.0.1:0".parse().unwrap(), store).unwrap();
        let addr = server.local_addr();

        let a = ask(addr, "WWW.catsndogs.lol.", RecordType::A).await;
        assert!(a.metadata.authoritative);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            a.answers[0].data,
            RData::from("127.0.0.2".parse::<IpAddr>().unwrap())
        );
        assert_eq!(a.answers[0].ttl, 5);
        let aaaa = ask(addr, "www.catsndogs.lol.", RecordType::AAAA).await;
        assert_eq!(aaaa.answers.len(), 1);

        let other = ask(addr, "api.catsndogs.lol.", RecordType::A).await;
        assert_eq!(other.metadata.response_code, ResponseCode::NXDomain);
        let outside = ask(addr, "example.com.", RecordType::A).await;
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
        let apex = ask(addr, "catsndogs.lol.", RecordType::A).await;
        assert_eq!(apex.metadata.response_code, ResponseCode::NoError);
        assert!(apex.answers.is_empty());

        // The same answer over TCP (two-byte length prefix), as `dig +tcp` asks.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut query = Message::new(9, MessageType::Query, OpCode::Query);
        query.add_query(Query::query("www.catsndogs.lol.".parse().unwrap(), RecordType::A));
        let bytes = query.to_vec().unwrap();
        tcp.write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let len = usize::from(tcp.read_u16().await.unwrap());
        let mut buf = vec![0u8; len];
        tcp.read_exact(&mut buf).await.unwrap();
        let over_tcp = Message::from_vec(&buf).unwrap();
        assert_eq!(over_tcp.metadata.id, 9);
        assert_eq!(
            over_tcp.answers[0].data,
            RData::from("127.0.0.2".parse::<IpAddr>().unwrap())
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shared_servers_serve_several_records_on_one_port() {
        let dir = tempfile::tempdir().unwrap();
        let www = WeightStore::open(spec(), dir.path().join("www.json")).unwrap();
        let api = WeightStore::open(
            RecordSpec {
                record: "api.catsndogs.lol".into(),
                ..spec()
            },
            dir.path().join("api.json"),
        )
        .unwrap();
        api.set(Weights::green(100)).unwrap();
        // A free port taken by the first server itself (no bind-then-release race).
        let first = LocalDnsServer::shared(SocketAddr::from(([127, 0, 0, 1], 0)), www).unwrap();
        let addr = first.local_addr();
        let second = LocalDnsServer::shared(addr, api).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let www = ask(addr, "www.catsndogs.lol.", RecordType::A).await;
        assert_eq!(
            www.answers[0].data,
            RData::from("127.0.0.1".parse::<IpAddr>().unwrap())
        );
        let api = ask(addr, "api.catsndogs.lol.", RecordType::A).await;
        assert_eq!(
            api.answers[0].data,
            RData::from("127.0.0.2".parse::<IpAddr>().unwrap())
        );
        first.shutdown().await;
    }

    async fn greens(addr: SocketAddr, queries: usize) -> usize {
        let green = RData::from("127.0.0.2".parse::<IpAddr>().unwrap());
        let mut n = 0;
        for _ in 0..queries {
            let answer = ask(addr, "www.catsndogs.lol.", RecordType::A).await;
            assert_eq!(answer.answers.len(), 1, "{answer:?}");
            if answer.answers[0].data == green {
                n += 1;
            }
        }
        n
    }

    /// The whole local path: the stage built from TOML serves its record on the configured
    /// port, each shift is seen by the next queries in proportion, and the weights outlive the
    /// stage (a rebuilt one reads them back from the file). The port is held by a server this
    /// test starts on port 0 and the stage joins (no bind-then-release race); that a stopped
    /// server frees its port is `a_shutdown_server_frees_its_port_for_a_restart`.
    #[tokio::test]
    async fn stage_shifts_are_answered_in_proportion_and_survive_a_restart() {
        use cutover_core::{BuildContext, Event, Pipeline, StageConfig};

        let dir = tempfile::tempdir().unwrap();
        let holder = WeightStore::open(
            RecordSpec {
                record: "holder.catsndogs.lol".into(),
                ..spec()
            },
            dir.path().join("holder.json"),
        )
        .unwrap();
        let held = LocalDnsServer::shared(SocketAddr::from(([127, 0, 0, 1], 0)), holder).unwrap();
        let addr = held.local_addr();
        let text = format!(
            "type = \"traffic-shift\"\nrouter = {{ type = \"local\", zone = \"catsndogs.lol\", record = \"www.catsndogs.lol\", blue = \"127.0.0.1\", green = [\"127.0.0.2\", \"::2\"], listen = \"{addr}\", ttl = \"1s\" }}"
        );
        let config: Box<dyn StageConfig> = toml::from_str(&text).unwrap();
        let cx = BuildContext::new(dir.path());
        let pipeline =
            Pipeline::from_stages("canary", vec![("shift".into(), config.build(&cx).await.unwrap())]);

        const QUERIES: usize = 400;
        for green in [0usize, 10, 50, 100] {
            let out = pipeline
                .run(Event::from_value(serde_json::json!({ "weight": green })))
                .await;
            assert!(out.is_passed(), "{out}");
            let seen = greens(addr, QUERIES).await;
            match green {
                0 => assert_eq!(seen, 0),
                100 => assert_eq!(seen, QUERIES),
                _ => {
                    let expected = QUERIES * green / 100;
                    assert!(
                        seen.abs_diff(expected) <= QUERIES / 20,
                        "{green} %: {seen} of {QUERIES} green"
                    );
                }
            }
        }
        drop(pipeline);
        assert!(dir.path().join("traffic/www.catsndogs.lol.json").exists());

        // A rebuilt stage opens the record's weights from the file, not from the old stage.
        let stage = config.build(&cx).await.unwrap();
        assert_eq!(greens(addr, 50).await, 50, "still all green after the restart");
        drop(stage);
        held.shutdown().await;
    }

    #[tokio::test]
    async fn a_shutdown_server_frees_its_port_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = WeightStore::open(spec(), dir.path().join("w.json")).unwrap();
        store.set(Weights::green(100)).unwrap();
        let server = LocalDnsServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
        let addr = server.local_addr();
        server.shutdown().await;
        let store = WeightStore::open(spec(), dir.path().join("w.json")).unwrap();
        let server = LocalDnsServer::start(addr, store).unwrap();
        assert_eq!(greens(addr, 10).await, 10);
        server.shutdown().await;
    }
}
