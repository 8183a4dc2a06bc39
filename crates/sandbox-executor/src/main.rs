//! `sandbox-executor`: started by the runtime as PID 1 of a fresh sandbox. See the library.

fn main() {
    std::process::exit(sandbox_executor::run());
}
