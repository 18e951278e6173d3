//! `cutover package`: the Lambda deployment zip the template's functions run — the cutover
//! binary as `bootstrap` (mode 755, what the `provided.al2023` runtime executes), the
//! pipeline file as `cutover.toml` (where the binary looks for it by default), and the files
//! its stages read ([`StageConfig::files`](cutover_core::StageConfig::files): a state-machine
//! definition, a CA file) at the relative paths the pipeline file gives them.

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
    /// A file the pipelines name (a probe's `ca_file`, a tags file), as written in the pipeline
    /// file: a path relative to its directory. Stored at that path beside `cutover.toml`, where
    /// the function looks for it. Repeatable.
    #[arg(long, value_name = "PATH")]
    include: Vec<PathBuf>,
}

pub(crate) fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    // The function would fail on every invocation with a file that does not load.
    let loaded = Loader::new().load_file(&args.file)?;
    // Files the stages read (a state-machine definition, a CA file), then any given by hand.
    let mut wanted: Vec<(PathBuf, String)> = Vec::new();
    for pipeline in &loaded.pipelines {
        for (i, stage) in pipeline.stages.iter().enumerate() {
            for path in stage.config.files() {
                let at = format!(
                    "pipeline \"{}\", stage {} ({})",
                    pipeline.name,
                    i + 1,
                    stage.type_name
                );
                wanted.push((path, at));
            }
        }
    }
    wanted.extend(args.include.iter().map(|p| (p.clone(), "--include".to_owned())));
    let pipelines = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let binary = std::fs::read(&args.binary).with_context(|| format!("reading {}", args.binary.display()))?;
    let arch = elf_arch(&binary).with_context(|| {
        format!(
            "{} is not a Linux executable; build one for Lambda, e.g. \
             `cargo build --release --target aarch64-unknown-linux-musl`",
            args.binary.display()
        )
    })?;
    let mut included: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, named_by) in &wanted {
        let name = zip_name(path).with_context(|| format!("{named_by} names {}", path.display()))?;
        if included.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let bytes = std::fs::read(loaded.base_dir.join(path)).with_context(|| {
            format!(
                "reading {} ({named_by}; relative to the pipeline file)",
                path.display()
            )
        })?;
        included.push((name, bytes));
    }
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
    for (name, bytes) in &included {
        zip.start_file(name.as_str(), options.unix_permissions(0o644))?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    let extra: String = included.iter().map(|(name, _)| format!(", {name}")).collect();
    eprintln!(
        "wrote {}: bootstrap ({arch}; deploy with `cutover template --arch {arch}`), cutover.toml{extra}",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The Lambda architecture of an ELF executable.
/// The name in the zip of an included file: its relative path, with `/` separators.
fn zip_name(path: &std::path::Path) -> anyhow::Result<String> {
    use std::path::Component;
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .with_context(|| format!("{} is not valid UTF-8", path.display()))?,
            ),
            Component::CurDir => {}
            _ => bail!(
                "{} cannot go in the zip: name files relative to the pipeline file's directory and inside it (no leading /, no ..)",
                path.display()
            ),
        }
    }
    if parts.is_empty() || parts == ["bootstrap"] || parts == ["cutover.toml"] {
        bail!(
            "{}: not a file the zip can hold beside bootstrap and cutover.toml",
            path.display()
        );
    }
    Ok(parts.join("/"))
}

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
