//! How a program learns it should stop: Ctrl-C or SIGTERM, once to finish cleanly, twice to go.

/// Resolves on the first Ctrl-C or SIGTERM; a second one exits the process at once (code 130).
///
/// The handlers are installed by the call itself, not on the first poll: call it before telling
/// anyone that we are ready, or a Ctrl-C in between kills the process without any cleanup (that
/// is what SIGINT does by default). Needs a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        // The same streams keep listening, so a second signal that comes at once is not lost.
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted twice; exiting now");
            std::process::exit(130);
        });
    }
}
