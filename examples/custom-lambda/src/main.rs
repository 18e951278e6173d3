//! Your own Lambda function: cutover's built-in stages, a pipeline file, and one stage of your
//! own (`team`), served with `lambda_runtime`.
//!
//! Build for Lambda with `cargo lambda build --release -p cutover-example-lambda` (or any
//! `provided.al2023` toolchain); bundle `pipeline.toml` next to `bootstrap` as `cutover.toml`.

mod team;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    team::link();
    let handler = cutover::lambda::LambdaHandler::from_env().await?;
    cutover::lambda::run(handler).await
}
