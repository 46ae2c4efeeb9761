//! The simulated board (`testfarm_board::sim::cli`) as a process for this crate's board
//! tests: they drive it through the real `command` power driver and a TCP console.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(testfarm_board::sim::cli::main(&args).await);
}
