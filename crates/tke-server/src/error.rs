//! Errors of setting up and starting a server. (Errors while serving a request are HTTP
//! answers with a JSON body, see [`crate::api`].)

use std::path::PathBuf;

use tke_proto::{ProtoError, UnitId};

/// Why `tke-unitd init` or `tke-unitd serve` could not do its work. Each names the file,
/// directory, unit or value concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A number or name given to `init` is out of range.
    #[error("invalid server layout: {what}")]
    Layout {
        /// What is wrong, and the allowed range.
        what: &'static str,
    },
    /// `init` needs an absent or empty directory.
    #[error("{} already exists and is not empty: choose a new directory (init never overwrites a server's units)", path.display())]
    DirectoryNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{} is not valid: {what}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A certificate file or the fleet CA is not valid.
    #[error("{}", path.display())]
    Certificate {
        /// The certificate or key file.
        path: PathBuf,
        /// What failed.
        source: ProtoError,
    },
    /// The configuration file is not valid TOML of the expected shape.
    #[error("the configuration file {} is not valid", path.display())]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: toml::de::Error,
    },
    /// The configuration file parses but holds an invalid value.
    #[error("the configuration file {} is not valid: {what} ({value})", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
        /// The value or entry concerned.
        value: String,
    },
    /// A service instance id is not a UUID.
    #[error("{value:?} is not a service instance id (a UUID such as 3f1c0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a)")]
    InstanceId {
        /// The value given.
        value: String,
    },
    /// An API key file does not hold a key in our format.
    #[error("{} does not hold a tke-unitd API key ({what})", path.display())]
    ApiKeyFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key itself).
        what: &'static str,
    },
    /// An API key file can be read by other users.
    #[error("the API key file {} can be read by other users; restrict it with `chmod 600 {}`", path.display(), path.display())]
    ApiKeyPermissions {
        /// The file.
        path: PathBuf,
    },
    /// A crypto unit could not be created or opened.
    #[error("crypto unit {} in {}", unit.uuid(), path.display())]
    Unit {
        /// The unit.
        unit: UnitId,
        /// Its directory.
        path: PathBuf,
        /// Why.
        source: Box<tke_unit::UnitError>,
    },
    /// The key service of an instance (its key store in the data directory) cannot be
    /// opened.
    #[error("the key storage of service instance {instance} in {} cannot be opened", path.display())]
    KeyService {
        /// The instance.
        instance: String,
        /// The key store directory.
        path: PathBuf,
        /// Why.
        source: Box<tke_client::ClientError>,
    },
    /// The units' state journal cannot be opened, replayed or compacted.
    #[error("the state journal of the crypto units")]
    Journal {
        /// Why (naming the file).
        source: tke_unit::JournalError,
    },
    /// A unit directory holds another unit than the configuration says.
    #[error("the crypto unit in {} does not match the configuration: {what}", path.display())]
    UnitMismatch {
        /// The unit directory.
        path: PathBuf,
        /// What differs.
        what: &'static str,
    },
    /// Another process serves these units.
    #[error("the crypto units in {} are in use by another process (lock {} is held): stop it first", dir.display(), lock.display())]
    Busy {
        /// The units directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The TLS configuration was refused.
    #[error("the TLS certificate {} or its key cannot be used", path.display())]
    Tls {
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The fleet CA key cannot be opened (a wrong passphrase among other causes).
    #[error("cannot open the fleet CA key {}", path.display())]
    CaKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<tke_pkcs8::FileError>,
    },
    /// A passphrase file is refused.
    #[error("the passphrase file {} {what}", path.display())]
    PassphraseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A server directory is not at the step of a join that was asked for.
    #[error("{}: {what}", dir.display())]
    JoinState {
        /// The server directory.
        dir: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handlers")]
    Signals {
        /// Why.
        source: std::io::Error,
    },
}

pub(crate) fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io {
        action,
        path,
        source,
    }
}
