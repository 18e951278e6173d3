//! The dashboard in a real browser: headless Chromium, driven through chromedriver's WebDriver
//! HTTP protocol, opens `cutover serve --ui` while a canary with short bakes runs, and the test
//! asserts what a person sees: the rollout listed with its phase, the current state marked in
//! the graph, the weights chart reaching 10 then 50, actions refused without the right key, an
//! abort from the page ending all blue with the reason in the history; and `cutover demo`'s
//! dashboard following its canary from 10% to 100%.
//!
//! chromedriver and chromium are the Debian packages `chromium-driver` and `chromium`, which
//! `scripts/test.sh` installs when missing. `CUTOVER_SCREENSHOT=docs/dashboard.png` saves a
//! screenshot of the demo's rollout page (the README's).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::rollouts::{Rig, event, version};
use crate::serve::{Daemon, request};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How WebDriver names an element reference in its answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    addr: String,
}

impl Driver {
    fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: run ./scripts/test.sh (it installs the Debian packages \
             chromium and chromium-driver) or apt-get install chromium chromium-driver"
        );
        // A port free a moment ago; chromedriver says when it listens on it. Taken meanwhile
        // (chromedriver exits), another is tried.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(driver) = Driver::start_on(port) {
                return driver;
            }
        }
        panic!("chromedriver did not start on any of three ports");
    }

    fn start_on(port: u16) -> Option<Driver> {
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // A group of its own, with the browsers it starts: all stopped on drop.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let driver = Driver {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("started successfully") => return Some(driver),
                Ok(_) => {}
                // Exited (its port taken) or silent: stopped on drop, another port is tried.
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// One headless Chromium window, closed on drop.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver) -> Browser<'a> {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }
        }}});
        let answer = send(&driver.addr, "POST", "/session", Some(&capabilities));
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Browser { driver, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        send(&self.driver.addr, method, &path, body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the element `css`; again when the page redrew it between finding and clicking.
    fn click(&self, css: &str) {
        for _ in 0..20 {
            let element = self.find(css);
            let path = format!("/session/{}/element/{element}/click", self.session);
            let (status, answer) = exchange(&self.driver.addr, "POST", &path, Some(&json!({})));
            if status == 200 {
                return;
            }
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.contains("stale element"), "clicking {css}: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{css} was redrawn under every click");
    }

    /// Clears the field `css` and types `text` into it, as a person would.
    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), Some(&json!({})));
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({"text": text})),
        );
    }

    /// The text a person sees in the element `css` (empty when there is none).
    fn text(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/execute/sync",
            Some(&json!({
                "script": "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                "args": [css],
            })),
        );
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (up to `seconds`) until the text of `css` satisfies `done`; that text.
    fn wait_text(&self, css: &str, seconds: u64, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let text = self.text(css);
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {what}; it shows {text:?}; the page: {}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None);
        decode_base64(v.as_str().expect("a base64 PNG"))
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = exchange(
            &self.driver.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// One WebDriver command; its `value`, or a panic with WebDriver's error.
fn send(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (status, answer) = exchange(addr, method, path, body);
    let mut answer: Value = serde_json::from_slice(&answer)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&answer)));
    let value = answer["value"].take();
    assert_eq!(status, 200, "{method} {path}: {value}");
    value
}

/// One HTTP/1.1 exchange, the body read to its `Content-Length` (chromedriver does not close
/// the connection when asked to, so reading to the end would wait for its timeout).
fn exchange(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).expect("chromedriver accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).unwrap();
    (status, answer)
}

fn decode_base64(text: &str) -> Vec<u8> {
    let digit = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= digit(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn decodes_base64() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}

#[test]
fn the_dashboard_shows_a_canary_live_and_aborts_it_with_the_operators_key() {
    // Bakes long enough for every step of the test to happen in the one it means (under a
    // loaded machine too); the page's promote ends Bake10 early.
    let rig = Rig::files(30);
    let daemon = Daemon::start(
        &[
            rig.file().to_str().unwrap(),
            "--pipeline",
            "ecs-events",
            "--listen",
            "127.0.0.1:0",
            "--ui",
            "--api-key-env",
            "CUTOVER_TEST_KEY",
            "--api-key-name",
            "dashboard-user",
        ],
        &[
            ("CUTOVER_TEST_KEY", "s3cret".into()),
            ("CUTOVER_LOG", "warn".into()),
        ],
        Stdio::null(),
    );
    let addr = daemon.addr().to_owned();
    // The browser first: its start takes seconds on a loaded machine, and the bakes below are
    // counted from the event.
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    let page = request(&addr, "GET", "/ui/", &[], b"");
    assert_eq!(page.status, 200, "the page needs no credentials");
    assert!(page.headers.contains("default-src 'self'"), "{}", page.headers);
    let posted = request(
        &addr,
        "POST",
        "/events",
        &[("x-api-key", "s3cret")],
        event(21).to_string().as_bytes(),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    let id = version(21);

    browser.go(&format!("http://{addr}/ui/"));
    // Without a key the daemon shows nothing, and the page says why.
    browser.wait_text("#notice", 10, "that credentials are needed", |t| {
        t.contains("needs credentials")
    });

    browser.type_into("#api-key", "s3cret");
    browser.click("#key-use");
    let row = browser.wait_text("#rollouts", 10, "the rollout, running", |t| {
        t.contains("service:cats") && t.contains("running")
    });
    assert!(row.contains("cats:21"), "{row}");
    browser.click("#rollouts a");
    browser.wait_text("#detail-title", 10, "the rollout's page", |t| t.contains(&id));
    let current = browser.wait_text("#graph .current", 20, "Bake10 as the current state", |t| {
        t.contains("Bake10")
    });
    assert!(current.contains("current"), "marked by a word too: {current}");
    browser.wait_text("#graph", 5, "Shift10 done", |t| t.contains("✓ Shift10"));
    browser.wait_text("#chart-steps", 5, "green at 10%", |t| t.contains("0% → 10%"));
    browser.wait_text("#time-left", 5, "the time left in Bake10", |t| {
        t.starts_with("Bake10:") && t.contains("left of 30 s")
    });

    // No key, then a wrong key: the page still shows what it had, and the abort is refused.
    browser.click("#key-forget");
    browser.type_into("#reason", "trying without a key");
    browser.click("button[data-action=abort]");
    browser.wait_text("#action-result", 10, "the refusal", |t| {
        t.contains("Refused") && t.contains("credentials")
    });
    browser.type_into("#api-key", "not-the-key");
    browser.click("#key-use");
    browser.type_into("#reason", "trying with a wrong key");
    browser.click("button[data-action=abort]");
    browser.wait_text("#action-result", 10, "the refusal", |t| {
        t.contains("abort Refused")
    });
    browser.type_into("#api-key", "s3cret");
    browser.click("#key-use");

    // Pause, resume and promote from the page, each with its reason.
    browser.type_into("#reason", "reading the logs");
    browser.click("button[data-action=pause]");
    browser.wait_text("#action-result", 10, "the pause accepted", |t| {
        t.contains("pause accepted")
    });
    browser.wait_text("#detail-phase", 10, "paused", |t| t == "paused");
    browser.type_into("#reason", "the logs look fine");
    browser.click("button[data-action=resume]");
    browser.wait_text("#detail-phase", 10, "running again", |t| t == "running");
    browser.type_into("#reason", "no need to wait");
    browser.click("button[data-action=promote]");
    browser.wait_text("#action-result", 10, "the promote accepted", |t| {
        t.contains("promote accepted")
    });

    browser.wait_text("#chart-steps", 40, "green at 50%", |t| t.contains("10% → 50%"));
    let current = browser.wait_text("#graph .current", 10, "Bake50", |t| t.contains("Bake50"));
    assert!(current.contains("current"), "{current}");

    browser.type_into("#reason", "p99 latency doubled at 50%");
    browser.click("button[data-action=abort]");
    browser.wait_text("#action-result", 10, "the abort accepted", |t| {
        t.contains("abort accepted")
    });
    browser.wait_text("#detail-phase", 30, "aborted", |t| t == "aborted");
    browser.wait_text("#detail-weights", 5, "all blue", |t| t == "blue 100% / green 0%");
    browser.wait_text("#history", 5, "the reason", |t| {
        t.contains("abort by dashboard-user: p99 latency doubled at 50%")
    });
    browser.wait_text("#graph", 5, "the failure marked", |t| {
        t.contains("✗ Bake50") && t.contains("✗ Aborted")
    });
    browser.wait_text("#history", 5, "every action with its reason", |t| {
        t.contains("pause by dashboard-user: reading the logs")
            && t.contains("resume by dashboard-user: the logs look fine")
            && t.contains("promote by dashboard-user: no need to wait")
    });
    browser.wait_text("#rollouts", 5, "aborted in the list", |t| t.contains("aborted"));

    // At a phone's width nothing spills sideways: the table scrolls in its own box.
    browser.call(
        "POST",
        "/window/rect",
        Some(&json!({"width": 390, "height": 844})),
    );
    std::thread::sleep(Duration::from_millis(500));
    let overflow = browser.call(
        "POST",
        "/execute/sync",
        Some(&json!({"script": "return [document.documentElement.scrollWidth, window.innerWidth];", "args": []})),
    );
    let (page, window) = (overflow[0].as_u64().unwrap(), overflow[1].as_u64().unwrap());
    assert!(
        page <= window,
        "the page is {page} px wide in a {window} px window"
    );
    assert_eq!(rig.weights(), (100, 0));
}

/// Saves what the browser shows to `$CUTOVER_SCREENSHOT`, when set.
fn screenshot(browser: &Browser) {
    let Some(path) = std::env::var_os("CUTOVER_SCREENSHOT") else {
        return;
    };
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = crate::repo(&path.to_string_lossy());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
}

/// A running `cutover demo`, stopped on drop: SIGTERM first, so it stops what it started.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_serves_its_dashboard_read_only_and_it_follows_the_canary_to_100_percent() {
    // The browser first, and 20 s bakes: each step is seen while it lasts on a loaded machine.
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    let mut child = crate::cutover()
        .args(["demo", "--json", "--speed", "3", "--no-prometheus"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cutover demo starts");
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its dashboard's URL");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(url) = v["dashboard"].as_str() {
            break url.to_owned();
        }
    };
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/ui/"))
        .unwrap_or_else(|| panic!("a loopback URL: {url}"))
        .to_owned();
    let refused = request(
        &addr,
        "POST",
        "/rollouts/x/abort",
        &[("content-type", "application/json")],
        b"{\"reason\":\"x\"}",
    );
    assert_eq!(refused.status, 405, "read-only: {}", refused.body);

    browser.go(&url);
    browser.wait_text("#rollouts", 30, "the demo's rollout", |t| {
        t.contains("cats-green")
    });
    browser.click("#rollouts a");
    browser.wait_text("#chart-steps", 30, "green at 10%", |t| t.contains("0% → 10%"));
    browser.wait_text("#graph .current", 10, "a bake as the current state", |t| {
        t.contains("Bake")
    });
    browser.wait_text("#chart-steps", 30, "green at 50%", |t| t.contains("10% → 50%"));
    browser.wait_text("#graph .current", 10, "Bake50", |t| t.contains("Bake50"));
    std::thread::sleep(Duration::from_millis(2500));
    screenshot(&browser);
    browser.wait_text("#chart-steps", 30, "green at 100%", |t| t.contains("50% → 100%"));
    browser.wait_text("#detail-weights", 5, "all green", |t| t == "blue 0% / green 100%");
}
