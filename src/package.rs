//! `cutover package`: the Lambda deployment zip the template's functions run — the cutover
//! binary as `bootstrap` (mode 755, what the `provided.al2023` runtime executes) and the
//! pipeline file as `cutover.toml` (where the binary looks for it by default).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_core::Loader;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Arguments of `cutover package`.
#[derive(Debug, Args)]
pub(crate) struct PackageArgs {
    /// The pipeline file, bundled as `cutover.toml`.
    file: PathBuf,
    /// The cutover binary built for Lambda (Linux, the architecture given to `cutover template`).
    #[arg(long)]
    binary: PathBuf,
    /// The zip to write.
    #[arg(long, short, default_value = "cutover.zip")]
    output: PathBuf,
}

pub(crate) fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    // The function would fail on every invocation with a file that does not load.
    Loader::new()
        .load_file(&args.file)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pipelines = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let binary = std::fs::read(&args.binary).with_context(|| format!("reading {}", args.binary.display()))?;
    let arch = elf_arch(&binary).with_context(|| {
        format!(
            "{} is not a Linux executable; build one for Lambda, e.g. \
             `cargo build --release --target aarch64-unknown-linux-musl`",
            args.binary.display()
        )
    })?;
    let file =
        std::fs::File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?;
    let mut zip = ZipWriter::new(file);
    // A fixed timestamp: the same inputs make the same zip (and the same S3 object).
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default());
    zip.start_file("bootstrap", options.unix_permissions(0o755))?;
    zip.write_all(&binary)?;
    zip.start_file("cutover.toml", options.unix_permissions(0o644))?;
    zip.write_all(&pipelines)?;
    zip.finish()?;
    eprintln!(
        "wrote {}: bootstrap ({arch}; deploy with `cutover template --arch {arch}`) and cutover.toml",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The Lambda architecture of an ELF executable.
fn elf_arch(bytes: &[u8]) -> anyhow::Result<&'static str> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("no ELF header");
    }
    // e_machine, little-endian, at offset 18 in both ELF classes.
    match bytes.get(18..20) {
        Some([0xb7, 0x00]) => Ok("arm64"),
        Some([0x3e, 0x00]) => Ok("x86_64"),
        other => bail!("an ELF executable for a machine Lambda does not run ({other:?})"),
    }
}
