//! One prompt's process: ONE tracker client (the tracker binds a registration to its source
//! socket), one library served on one port from the start, the downloads, and what each command
//! does with them.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_engine::discovery::choose_tracker;
use shoal_engine::rate::RateLimit;
use shoal_engine::seeding::{prepare, Seeding};
use shoal_engine::store::folder::hash_folder;
use shoal_engine::store::{Library, SharedFile};
use shoal_engine::tracker_client::{resolve, TrackerClient};
use shoal_proto::manifest::DEFAULT_CHUNK_SIZE;
use shoal_proto::tracker::Filter;
use tokio_util::sync::CancellationToken;

use super::command::{Command, HELP};
use super::console::Console;
use super::editor::Names;
use super::status::{self, Meter};
use super::transfers::Transfers;
use super::Settings;

/// How often the names offered by Tab are fetched again from the tracker.
const NAMES_EVERY: Duration = Duration::from_secs(10);

pub struct Session {
    client: Arc<TrackerClient>,
    library: Arc<Library>,
    /// Taken by [`Session::close`], from the prompt's `exit` or from SIGTERM, whichever is first.
    seeding: tokio::sync::Mutex<Option<Seeding>>,
    /// Our address as the status shows it (the port matters: it is ours in the tracker's lists).
    serving: SocketAddr,
    transfers: Arc<Transfers>,
    meter: Arc<Meter>,
    console: Console,
    names: Names,
    stop: CancellationToken,
    /// `--timeout`: a lookup or listing at the tracker gives up after it, as the plain leecher's.
    timeout: Duration,
}

impl Session {
    /// Finds the tracker and starts serving (nothing is registered until something is shared).
    pub async fn start(settings: Settings, console: Console, names: Names) -> anyhow::Result<Self> {
        let timeout = settings.download.timeout;
        let client = crate::within(timeout, "finding the tracker", async {
            Ok(choose_tracker(settings.tracker.as_deref(), settings.discovery).await?)
        })
        .await?;
        let client = Arc::new(client);
        let (listener, advertise) = prepare(settings.port, settings.advertise.as_deref()).await?;
        let library = Library::new();
        let upload = settings.upload.map(|r| Arc::new(RateLimit::new(r)));
        let seeding = Seeding::start(library.clone(), client.clone(), listener, advertise, upload)?;
        let port = advertise.and_then(|(_, p)| p).unwrap_or(seeding.port);
        let mut options = settings.download;
        options.serving_port = Some(port);
        let transfers = Transfers::new(client.clone(), library.clone(), options, console.clone());
        let stop = CancellationToken::new();
        let meter = Meter::start(library.clone(), stop.clone());
        tokio::spawn(refresh_names(
            client.clone(),
            names.clone(),
            stop.clone(),
            timeout,
        ));
        Ok(Session {
            serving: SocketAddr::new(client.addr().ip(), port),
            client,
            library,
            seeding: tokio::sync::Mutex::new(Some(seeding)),
            transfers,
            meter,
            console,
            names,
            stop,
            timeout,
        })
    }

    pub fn tracker(&self) -> SocketAddr {
        self.client.addr()
    }

    pub fn port(&self) -> u16 {
        self.serving.port()
    }

    /// Runs one command; what goes wrong is said in one sentence and the prompt goes on.
    pub async fn run(&self, command: Command) {
        if let Err(e) = self.try_run(command).await {
            println!("{e:#}");
        }
    }

    async fn try_run(&self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::List(pattern) => self.list(pattern).await?,
            Command::Get { query, dir } => {
                let entry =
                    crate::within(self.timeout, "looking the file up at the tracker", async {
                        Ok(resolve(&self.client, &query).await?)
                    })
                    .await?;
                self.transfers.start(entry, dir)?;
            }
            Command::Share(path) => self.share(&path)?,
            Command::Status => {
                let text = status::report(
                    &self.client,
                    &self.library,
                    &self.transfers,
                    &self.meter,
                    self.serving,
                )
                .await;
                print!("{text}");
            }
            Command::Stop(name) => self.stop(&name)?,
            Command::Help => println!("{HELP}"),
            Command::Nothing | Command::Exit => {}
        }
        std::io::stdout().flush()?;
        Ok(())
    }

    async fn list(&self, pattern: Option<String>) -> anyhow::Result<()> {
        let filter = pattern.clone().map_or(Filter::All, Filter::NameContains);
        let entries = crate::within(self.timeout, "listing the tracker's files", async {
            Ok(self.client.list(filter).await?)
        })
        .await?;
        if pattern.is_none() {
            *self.names.lock().unwrap() = entries.iter().map(|e| e.name.clone()).collect();
        }
        if entries.is_empty() {
            println!("no files");
        }
        let mut out = std::io::stdout().lock();
        for e in entries {
            let name = shoal_proto::names::printable(&e.name);
            writeln!(out, "{} {} {} {name}", e.id, e.size, e.seeders)?;
        }
        Ok(())
    }

    /// Hashes the file or folder in the background, then shares it (a folder as one share, as
    /// `seeder FOLDER` does); the prompt stays free meanwhile.
    fn share(&self, path: &Path) -> anyhow::Result<()> {
        let meta =
            std::fs::metadata(path).map_err(|e| shoal_engine::store::StoreError::io(path, e))?;
        let folder = meta.is_dir();
        if folder {
            std::fs::read_dir(path).map_err(|e| shoal_engine::store::StoreError::io(path, e))?;
        } else {
            std::fs::File::open(path).map_err(|e| shoal_engine::store::StoreError::io(path, e))?;
        }
        println!("hashing {} in the background", path.display());
        let (path, library, console) = (
            path.to_path_buf(),
            self.library.clone(),
            self.console.clone(),
        );
        tokio::spawn(async move {
            let notes_to = console.clone();
            let hashed = tokio::task::spawn_blocking(move || match folder {
                true => hash_folder(&path, DEFAULT_CHUNK_SIZE, &Default::default()).map(|h| {
                    for note in &h.notes {
                        notes_to.line(format!("share: {note}"));
                    }
                    h.shared
                }),
                false => SharedFile::hash(&path, DEFAULT_CHUNK_SIZE, &Default::default()),
            })
            .await
            .expect("hashing panicked");
            console.line(match hashed {
                Ok(file) => {
                    let line = format!(
                        "sharing {} {} {}",
                        file.id,
                        file.manifest.size(),
                        shoal_proto::names::printable(&file.name)
                    );
                    library.add(file);
                    line
                }
                Err(e) => format!("share failed: {e}"),
            });
        });
        Ok(())
    }

    /// Stops a download by name, or else stops sharing the file by that name (or id prefix).
    fn stop(&self, name: &str) -> anyhow::Result<()> {
        if self.transfers.stop(name) {
            return Ok(());
        }
        let shared = self.library.vouched().into_iter().find(|(e, _)| {
            e.name == name || (name.len() >= 8 && e.id.to_string().starts_with(name))
        });
        let Some(file) = shared.and_then(|(e, _)| self.library.get(&e.id)) else {
            anyhow::bail!("nothing called {name:?} is downloading or shared here");
        };
        self.library.remove(&file);
        println!(
            "stopped sharing {}",
            shoal_proto::names::printable(&file.name)
        );
        Ok(())
    }

    /// Stops the downloads (their partial files are kept), unregisters and stops serving.
    pub async fn close(&self) {
        // Held until the end: a second caller returns once the first has unregistered.
        let mut seeding = self.seeding.lock().await;
        self.transfers.stop_all().await;
        self.stop.cancel();
        if let Some(seeding) = seeding.take() {
            seeding.stop().await;
        }
        // Its last log lines (unregistered) go out before the process does.
        let console = self.console.clone();
        let _ = tokio::task::spawn_blocking(move || console.flush()).await;
    }
}

/// Keeps the names Tab offers close to what the tracker lists.
async fn refresh_names(
    client: Arc<TrackerClient>,
    names: Names,
    stop: CancellationToken,
    timeout: Duration,
) {
    loop {
        let listed = tokio::time::timeout(timeout, client.list(Filter::All)).await;
        if let Ok(Ok(entries)) = listed {
            *names.lock().unwrap() = entries.into_iter().map(|e| e.name).collect();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(NAMES_EVERY) => {}
        }
    }
}
