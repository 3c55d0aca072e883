//! The operator's tool: everything lives in the library (`zero_logs::ctl`).
fn main() -> std::process::ExitCode {
    zero_logs::ctl::main()
}
