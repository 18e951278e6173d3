//! `cutover dedup`: manage the DynamoDB dedup table; measure the embedded store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use cutover_core::BuildContext;
use cutover_stages::dedup::{Claim, DedupStore, DynamoStore, Record, SqliteStore, Status};

/// `cutover dedup …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DedupCommand {
    /// Create the DynamoDB table the `dedup` stage's `dynamodb` store expects: partition key
    /// `pk` (S), on-demand billing, TTL on `expires`.
    #[command(after_help = "Example:\n  cutover dedup create-table --table cutover-dedup")]
    CreateTable {
        /// The table name.
        #[arg(long)]
        table: String,
    },
    /// Claim N distinct keys in the embedded SQLite store and report claims per second (run two
    /// at once on one file to measure contention).
    #[command(after_help = "Example:\n  cutover dedup bench --path /tmp/bench.sqlite --claims 20000")]
    Bench {
        /// The SQLite file.
        #[arg(long)]
        path: PathBuf,
        /// How many claims.
        #[arg(long, default_value_t = 10_000)]
        claims: u64,
        /// Prefix of the keys (give two processes the same prefix to make them contend for the
        /// same keys).
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
}

pub(crate) async fn run(cmd: DedupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DedupCommand::CreateTable { table } => {
            let cx = BuildContext::default();
            let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
            DynamoStore::create_table(&client, &table)
                .await
                .map_err(anyhow::Error::msg)?;
            outln!("created table {table} (partition key pk, TTL on expires)");
            Ok(ExitCode::SUCCESS)
        }
        DedupCommand::Bench { path, claims, prefix } => {
            let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
            let store = SqliteStore::open(&path, now).map_err(anyhow::Error::msg)?;
            let started = Instant::now();
            let mut won = 0u64;
            for i in 0..claims {
                let record = Record {
                    key: format!("{prefix}-{i}"),
                    status: Status::InProgress,
                    lease_expires: now + 300,
                    expires: now + 86_400,
                    payload_hash: String::new(),
                    owner: format!("bench/{}", std::process::id()),
                    claimed_at: now,
                    event_id: String::new(),
                    result: None,
                };
                if store.claim(&record, now, None).await? == Claim::Won {
                    won += 1;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            outln!(
                "{{\"claims\":{claims},\"won\":{won},\"seconds\":{secs:.3},\"claims_per_second\":{:.0}}}",
                claims as f64 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
