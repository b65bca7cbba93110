//! `leecher` with no file on a terminal (or `leecher --interactive`): a prompt where a person
//! lists, gets (in the background, several at once), shares, watches and stops files, in one
//! process that serves everything it has until `exit`.
//!
//! The parts: [`command`] (what a line says), [`editor`] (line editing and completion),
//! [`console`] (printing above the prompt), [`transfers`] (background downloads and their
//! progress), [`status`] and [`session`] (the process's tracker client, library and server).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Editor, ExternalPrinter};
use shoal_engine::download::DownloadOptions;
use shoal_engine::rate::Rate;

mod command;
mod console;
mod editor;
mod session;
mod status;
mod transfers;

use command::Command;
use console::Console;
use editor::PromptHelper;
use session::Session;

const PROMPT: &str = "shoal> ";

/// What the prompt takes from the command line.
struct Settings {
    pub tracker: Option<String>,
    pub discovery: bool,
    pub port: u16,
    pub advertise: Option<String>,
    pub upload: Option<Rate>,
    /// For every `get`; its folder is `--out`, which `get NAME DIR` replaces.
    pub download: DownloadOptions,
}

impl From<super::Args> for Settings {
    fn from(args: super::Args) -> Settings {
        let download = super::download_options(&args);
        Settings {
            // The environment is read here, not by clap (see `tracker_setting`).
            tracker: shoal_engine::discovery::tracker_setting(args.find.tracker),
            discovery: shoal_engine::discovery::discovery_wanted(args.find.no_discovery),
            port: args.port,
            advertise: args.advertise,
            upload: args.max_upload_rate,
            download,
        }
    }
}

/// Both ends a person uses are a terminal.
pub fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The prompt, with the leecher's flags (those of a download apply to every `get`).
pub(crate) fn main(args: super::Args) -> ExitCode {
    let settings = Settings::from(args);
    let d = &settings.download;
    if d.window == 0 || d.max_peers == 0 || d.stall_timeout.is_zero() {
        eprintln!("leecher: --window, --max-peers and --stall-timeout must be at least 1");
        return ExitCode::FAILURE;
    }
    let config = Config::builder().auto_add_history(true).build();
    let mut editor: Editor<PromptHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("leecher: cannot open the prompt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names = Arc::new(Mutex::new(Vec::new()));
    editor.set_helper(Some(PromptHelper::new(names.clone())));
    // Without a terminal there is no line to protect: news goes to stderr as it comes.
    let printer = editor
        .create_external_printer()
        .ok()
        .map(|p| Box::new(p) as Box<dyn ExternalPrinter + Send>);
    let console = Console::new(printer);
    console::init_logging(console.clone());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // The terminal as it was before the line editor's raw mode, for leaving on SIGTERM.
    let saved = rustix::termios::tcgetattr(std::io::stdin()).ok();
    let session = match rt.block_on(Session::start(settings, console, names)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leecher: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let session = Arc::new(session);
    rt.block_on(handle_signals(session.clone(), saved));
    println!(
        "shoal prompt: tracker {}, serving on port {}; type help for the commands",
        session.tracker(),
        session.port()
    );
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => match command::parse(&line) {
                Ok(Command::Exit) => break,
                Ok(command) => rt.block_on(session.run(command)),
                Err(e) => println!("{e}"),
            },
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("leecher: reading the prompt: {e}");
                break;
            }
        }
    }
    println!("stopping downloads and unregistering");
    rt.block_on(session.close());
    println!("bye");
    ExitCode::SUCCESS
}

/// At the prompt Ctrl-C is a key (it clears the line); while a command runs it must not kill the
/// process before it unregisters, so SIGINT is taken and dropped. SIGTERM leaves as `exit` does,
/// from under the line editor, so the terminal's settings are put back first.
async fn handle_signals(session: Arc<Session>, saved: Option<rustix::termios::Termios>) {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut interrupts) = signal(SignalKind::interrupt()) {
        tokio::spawn(async move { while interrupts.recv().await.is_some() {} });
    }
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::spawn(async move {
        term.recv().await;
        if let Some(saved) = saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                &saved,
            );
        }
        println!("\r\nterminated: stopping downloads and unregistering");
        session.close().await;
        println!("bye");
        std::process::exit(0);
    });
}
