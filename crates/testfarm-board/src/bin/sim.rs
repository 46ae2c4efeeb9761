//! `testfarm-board-sim`: the simulated board on its own, so this crate's tests drive a real
//! process without building the whole `testfarm` binary. `testfarm sim-board` is the same
//! program ([`testfarm_board::sim::cli`]).

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(testfarm_board::sim::cli::main(&args).await);
}
