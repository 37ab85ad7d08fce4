//! fake peer (lands next).
pub fn main(_args: &[String]) -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
