//! The `roost` binary: parses the command line and hands over to [`roost_node::cli`].

fn main() -> std::process::ExitCode {
    roost_node::cli::main()
}
