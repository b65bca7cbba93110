//! Where background news goes while a person types: log lines, download progress and results are
//! printed above the line being edited (rustyline's external printer redraws the prompt and what
//! was typed below them), so they never break the prompt or leave stale progress behind.

use std::io;
use std::sync::mpsc;

use rustyline::ExternalPrinter;

/// A handle for printing a whole line from any thread.
#[derive(Clone)]
pub struct Console {
    /// To the thread that owns the printer; `None` without a terminal (`--interactive` on a
    /// pipe): lines go to stderr as they come.
    lines: Option<mpsc::Sender<Message>>,
}

enum Message {
    Line(String),
    /// Answered once every line before it is printed.
    Flush(mpsc::SyncSender<()>),
}

impl Console {
    pub fn new(printer: Option<Box<dyn ExternalPrinter + Send>>) -> Console {
        let lines = printer.map(|mut printer| {
            let (tx, rx) = mpsc::channel::<Message>();
            // The printer hands each line to the line editor and may wait until it takes it (it
            // takes none while a command runs): only this thread waits, never a runtime thread.
            std::thread::spawn(move || {
                for message in rx {
                    match message {
                        Message::Line(line) => {
                            if printer.print(line.clone()).is_err() {
                                eprint!("{line}");
                            }
                        }
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
            tx
        });
        Console { lines }
    }

    /// Prints `text` as one or more whole lines.
    pub fn line(&self, text: impl Into<String>) {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        match &self.lines {
            Some(tx) => {
                if let Err(mpsc::SendError(Message::Line(text))) = tx.send(Message::Line(text)) {
                    eprint!("{text}");
                }
            }
            None => eprint!("{text}"),
        }
    }

    /// Returns once every line sent before is printed (before the process exits).
    pub fn flush(&self) {
        if let Some(tx) = &self.lines {
            let (done, wait) = mpsc::sync_channel(1);
            if tx.send(Message::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

/// Routes `tracing` through the console: logging to stderr (filtered by `RUST_LOG`, default
/// info), as the other programs do, but one whole line at a time above the prompt.
pub fn init_logging(console: Console) {
    // Plain: escape sequences of a coloured log line would be counted as text by the line editor.
    shoal_cli::init_logging_plain(move || LogLine {
        console: console.clone(),
        buf: Vec::new(),
    });
}

/// One event's text, printed whole when the formatter drops it.
struct LogLine {
    console: Console,
    buf: Vec<u8>,
}

impl io::Write for LogLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.console.line(String::from_utf8_lossy(&self.buf));
        }
    }
}
