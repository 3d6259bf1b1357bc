fn main() {
    std::process::exit(qforge::cli::main());
}
