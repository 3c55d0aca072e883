//! The worker binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    zero_logs::worker::main()
}
