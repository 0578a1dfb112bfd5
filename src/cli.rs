//! Command line: `secretfs mount SOURCE MOUNTPOINT [OPTIONS]`, plus the
//! `-o key=value,flag` form that `mount(8)` and `/etc/fstab` use.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::fs::view::Layout;

/// Mount HashiCorp Vault / OpenBao KV secrets as files.
///
/// Each Vault folder and each secret becomes a directory, each key of a secret a
/// file (mode 0400 unless --file-mode) holding exactly the value. Values are
/// fetched on demand and kept in memory for --ttl. The mount is read-only
/// unless started with --writable: every change fails with EROFS, so a
/// stray `rm -rf` cannot reach the store, and opens skip the daemon. With
/// --writable a changed file goes back to the store when it is closed.
#[derive(Debug, Parser)]
#[command(
    name = "secretfs",
    version = VERSION,
    propagate_version = true,
    args_override_self = true,
    after_help = "mount(8) form: secretfs SOURCE MOUNTPOINT -o OPTIONS  (what `mount -t fuse.secretfs` \
and /etc/fstab run; returns once mounted and keeps serving in the background)"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What `--version` prints: the version, and the commit built and its date.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SECRETFS_COMMIT"),
    ", ",
    env!("SECRETFS_COMMIT_DATE"),
    ")"
);

/// Subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start-up: the size of the mount variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Mount SOURCE on MOUNTPOINT and serve it in the foreground until
    /// SIGINT/SIGTERM or `fusermount3 -u MOUNTPOINT`.
    ///
    /// The token is read from --token-file, else VAULT_TOKEN, else ~/.vault-token;
    /// it is never accepted on the command line.
    // The usage line written out: clap's, after an error, lists the
    // options given (VAULT_ADDR too) as if they were required.
    #[command(
        override_usage = "secretfs mount [OPTIONS] <SOURCE> <MOUNTPOINT>",
        after_help = "Every option can also be given as -o key=value or -o flag, comma-separated \
(e.g. -o ttl=30s,uid=1000,allow_other,writable), as mount(8) and /etc/fstab pass them; \
-o rw, which mount(8) always passes, is ignored: only --writable (-o writable) makes a mount writable.\n\n\
Examples:\n  VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... secretfs mount secret/ /run/secrets\n  \
secretfs mount kv1/team /mnt/team --ttl 5s --uid 1000 --gid 1000\n  \
secretfs mount secret/team /mnt/team --writable    # changes go back to the store"
    )]
    Mount(MountArgs),

    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell), e.g. `secretfs completions bash > /etc/bash_completion.d/secretfs`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },

    /// Print the manual page secretfs(1) (roff), or with --dir write it and
    /// one page per subcommand (secretfs-mount(1), ...) into DIR, e.g.
    /// `secretfs man --dir /usr/local/share/man/man1`; `secretfs man | man -l -`
    /// reads it.
    Man {
        /// Write secretfs.1 and the subcommands' pages into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },

    /// Run COMMAND with the keys of every SOURCE as environment variables,
    /// and restart it (or signal it) when they change.
    ///
    /// Each SOURCE is a secret (its keys), or a folder (the keys of every
    /// secret directly in it; a SOURCE ending in `/` is always taken as a
    /// folder). SOURCEs are layered in order: a key of a later one wins
    /// over the same key of an earlier one. Keys that cannot be variable
    /// names (`db-password`, `1X`) are left out, each named once in a
    /// warning. The process environment is passed on; the secrets win over
    /// it unless --no-override.
    ///
    /// Every SOURCE is read before COMMAND starts: one that is missing or
    /// refused stops secretfs with one line naming it, and exit code 125.
    /// Then each is read again once per --ttl; when a value COMMAND was
    /// given changes, --on-change says what happens. secretfs passes the
    /// signals it receives (HUP, INT, QUIT, TERM, USR1, USR2, WINCH) on to
    /// COMMAND and exits with its exit code (128+N when signal N ended it);
    /// a command that exits on its own is not restarted.
    #[command(
        override_usage = "secretfs exec [OPTIONS] <SOURCE>... -- <COMMAND>...",
        after_help = "Examples:\n  \
secretfs exec secret/shop secret/shop/prod secret/shop/prod/api -- ./api-server\n  \
secretfs exec --prefix APP_ --upcase --ttl 1m secret/team/ -- env\n  \
secretfs exec --on-change signal:HUP secret/nginx -- nginx -g 'daemon off;'\n\n\
Exit codes: COMMAND's own; 128+N when signal N ended it; 125 when secretfs \
could not start it (a SOURCE missing or refused, no token); 126 when COMMAND \
cannot be executed; 127 when it is not found."
    )]
    Exec(ExecArgs),

    /// Report whether the mount at MOUNTPOINT is alive and its store reachable.
    ///
    /// Prints one JSON object (mounted, store reachable, last error, cache
    /// entries, token TTL), or with --format text one line per field.
    /// Exits 0 when healthy; 1 when the mount answers but Vault does not
    /// (cached secrets are still served) or its audit log cannot record;
    /// 2 when no live secretfs mount is there; 3 when a FUSE mount is there
    /// but this user may not look into it (not the mounting user, and no
    /// allow_other). Fit for Kubernetes exec probes: readiness on 0,
    /// liveness on "not 2".
    Status {
        /// Where secretfs is mounted.
        mountpoint: PathBuf,

        /// `json` (one object, for programs) or `text` (for people).
        #[arg(long, value_enum, default_value = "json", value_name = "FORMAT")]
        format: StatusFormat,
    },

    /// Manage a store file (`file:PATH`): `secretfs store init`.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// How `secretfs status` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// One JSON object.
    Json,
    /// A summary line, then one `field: value` line per field.
    Text,
}

/// Arguments of `secretfs mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// KV mount plus an optional folder: `secret/`, `secret/team/prod`, `kv1/`.
    /// The KV version (1 or 2) is detected from the server. Or a store
    /// file, `file:PATH` (encrypted with age; needs --identity). Or AWS
    /// Secrets Manager, `aws-sm:PREFIX` (`aws-sm:prod/`: the secrets whose
    /// names start with `prod/`; see --region).
    pub source: String,

    /// Empty directory to mount on.
    pub mountpoint: PathBuf,

    /// Lay SOURCE over SOURCE and the layers before it (repeatable;
    /// -o layer=SOURCE), like overlayfs's lower directories: a secret shows
    /// the keys of every layer, the top-most value winning, and
    /// `getfattr -n user.secretfs.source FILE` names the layer a value
    /// comes from. With --writable, writes go to the last layer: `rm` of a
    /// key uncovers the value below, and of a key only a lower layer holds
    /// fails with EPERM. A layer on another server is given as a URL,
    /// `https://HOST:PORT/SOURCE`. A lower layer that is forbidden or down
    /// fails only what depends on it (`secretfs status` names it).
    #[arg(long, value_name = "SOURCE", action = clap::ArgAction::Append)]
    pub layer: Vec<String>,

    #[command(flatten)]
    pub vault: VaultArgs,

    #[command(flatten)]
    pub age: AgeArgs,

    #[command(flatten)]
    pub aws: AwsArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    #[command(flatten)]
    pub files: FileArgs,

    #[command(flatten)]
    pub service: ServiceArgs,

    /// Mount options, comma-separated: any long option above as key=value or flag.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,

    /// TOML file of options (same names as the long options, e.g. `ttl = "30s"`,
    /// `uid = 1000`, `allow_other = true`). Options on the command line win.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Stay in the foreground in the mount-helper form (`secretfs SOURCE MOUNTPOINT`),
    /// which otherwise returns once the filesystem answers. `secretfs mount` always
    /// stays in the foreground.
    #[arg(short, long)]
    pub foreground: bool,

    /// Run in the background once mounted (set by the mount-helper form).
    #[arg(long, hide = true)]
    pub background: bool,

    /// File descriptor on which a background daemon reports readiness (internal).
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,

    /// Append logs to this file (in the background, logs go nowhere otherwise).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More logging (-v debug, -vv trace for secretfs itself). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Arguments of `secretfs exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Secrets or folders, e.g. `secret/shop secret/shop/prod` (later ones win).
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,

    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    /// Put PREFIX before every variable name (`--prefix APP_`: key `DB_URL`
    /// becomes `APP_DB_URL`).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Upper-case every variable name (`db_url` becomes `DB_URL`).
    #[arg(long)]
    pub upcase: bool,

    /// Variables the process environment already has keep their value:
    /// secrets only add variables.
    #[arg(long)]
    pub no_override: bool,

    /// How often every SOURCE is read again to see whether it changed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,

    /// What a change does. `restart`: stop COMMAND with --stop-signal (SIGKILL
    /// after --stop-timeout) and start it again with the new environment.
    /// `signal:NAME` (e.g. `signal:HUP`): send it that signal, for programs
    /// that reload their own files; its environment stays as it was.
    /// `ignore`: only log the change.
    #[arg(long, value_name = "ACTION", default_value = "restart", value_parser = crate::exec::OnChange::parse)]
    pub on_change: crate::exec::OnChange,

    /// The signal that asks COMMAND to stop before a restart.
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", value_parser = crate::exec::Signal::parse)]
    pub stop_signal: crate::exec::Signal,

    /// How long COMMAND may take to stop before it is killed (SIGKILL).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// How long to wait at start for a store that does not answer (down,
    /// sealed, no leader yet), trying again with backoff and logging each
    /// try; 0 gives up at once. A store that answers no (a refused token,
    /// a missing SOURCE) stops secretfs at once.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub wait_for_store: Duration,

    /// Run COMMAND as USER (a name or uid: its groups, HOME, USER and
    /// LOGNAME), without VAULT_TOKEN; secretfs keeps its own user and the
    /// token. Needs secretfs to run as root. With a --token-file only root
    /// can read, COMMAND cannot reach the token.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    #[command(flatten)]
    pub vault: VaultArgs,

    #[command(flatten)]
    pub age: AgeArgs,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Append secretfs's own logs to this file instead of stderr (which
    /// COMMAND shares).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More logging (-v debug, -vv trace). By default only warnings, and
    /// what secretfs does to COMMAND (restarts, signals). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How to reach Vault.
#[derive(Debug, Args)]
#[command(next_help_heading = "Vault connection")]
pub struct VaultArgs {
    /// Vault / OpenBao address. For an HA cluster, give every node (the
    /// flag repeated, or comma-separated, also in VAULT_ADDR and -o addr=):
    /// the first that answers is used, and another when it stops answering.
    #[arg(
        long,
        env = "VAULT_ADDR",
        default_value = "https://127.0.0.1:8200",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub addr: Vec<String>,

    /// How to get a token. `token`: --token-file, else VAULT_TOKEN, else
    /// ~/.vault-token (a file is re-read when it changes, so a rotated token
    /// is picked up). `approle`: log in with --role-id-file and
    /// --secret-id-file; `cert`: log in with the TLS client certificate
    /// (--client-cert, --client-key); `kubernetes`: log in as --role with
    /// the pod's service account token. Logins are repeated before the
    /// token runs out.
    #[arg(long, value_enum, default_value = "token", value_name = "METHOD")]
    pub auth: AuthMethod,

    /// File holding the token; given, it wins over VAULT_TOKEN (default:
    /// VAULT_TOKEN, else ~/.vault-token).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// --auth approle: file holding the role ID.
    #[arg(long, value_name = "PATH")]
    pub role_id_file: Option<PathBuf>,

    /// --auth approle: file holding the secret ID (leave out for a role
    /// with bind_secret_id=false).
    #[arg(long, value_name = "PATH")]
    pub secret_id_file: Option<PathBuf>,

    /// --auth kubernetes: the Vault role to log in as. --auth cert: the
    /// certificate role (default: any that matches the certificate).
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,

    /// PEM file of a TLS client certificate to present to the server (for
    /// --auth cert, or a server that requires client certificates).
    #[arg(
        long,
        env = "VAULT_CLIENT_CERT",
        value_name = "PATH",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key.
    #[arg(
        long,
        env = "VAULT_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,

    /// --auth kubernetes: file holding the service account token.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub jwt_file: PathBuf,

    /// Path the auth method is mounted at (default: approle, cert or kubernetes).
    #[arg(long, value_name = "PATH")]
    pub auth_mount: Option<String>,

    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, env = "VAULT_CACERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// Do not verify the server's TLS certificate (testing only).
    #[arg(long, env = "VAULT_SKIP_VERIFY", value_parser = clap::builder::FalseyValueParser::new())]
    pub tls_skip_verify: bool,

    /// Vault Enterprise / OpenBao namespace.
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub namespace: Option<String>,

    /// Deadline of the store requests of one operation (Vault, AWS, or a
    /// store file's lock); past it the operation fails with EIO.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How to open a store file (a SOURCE or --layer `file:PATH`).
#[derive(Debug, Args)]
#[command(next_help_heading = "File store (file:PATH)")]
pub struct AgeArgs {
    /// Identity that opens `file:` SOURCEs and layers: an age identity
    /// file (`AGE-SECRET-KEY-1...` lines, as age-keygen writes them), one
    /// encrypted with `age -p`, or an OpenSSH private key (ed25519 or RSA,
    /// e.g. ~/.ssh/id_ed25519).
    #[arg(long, env = "SECRETFS_AGE_IDENTITY_FILE", value_name = "PATH")]
    pub identity: Option<PathBuf>,

    /// File holding the passphrase of a passphrase-protected --identity
    /// (made with `age -p`, or an SSH key with a passphrase): its
    /// content, less a trailing newline. The passphrase itself is never
    /// taken on the command line.
    #[arg(long, env = "SECRETFS_AGE_PASSPHRASE_FILE", value_name = "PATH")]
    pub identity_passphrase_file: Option<PathBuf>,
}

/// How to reach AWS Secrets Manager (a SOURCE or --layer `aws-sm:PREFIX`).
/// Credentials are found as the AWS CLI finds them: AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), the shared files
/// ~/.aws/config and ~/.aws/credentials (SSO and credential_process
/// profiles too), web identity (EKS: AWS_ROLE_ARN and
/// AWS_WEB_IDENTITY_TOKEN_FILE), ECS and EC2 instance roles.
#[derive(Debug, Args)]
#[command(next_help_heading = "AWS Secrets Manager (aws-sm:PREFIX)")]
pub struct AwsArgs {
    /// AWS region, e.g. eu-west-1 (default: AWS_REGION, AWS_DEFAULT_REGION,
    /// then the profile's region).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Profile of ~/.aws/config and ~/.aws/credentials to take credentials
    /// and region from (default: AWS_PROFILE, else `default`). Credentials
    /// are found as the AWS CLI finds them: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN), this profile (static
    /// keys, role_arn, SSO, credential_process), web identity (EKS:
    /// AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE), ECS and EC2 roles.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Send requests to this URL instead of AWS's (LocalStack, moto, a VPC
    /// endpoint); default: AWS_ENDPOINT_URL_SECRETS_MANAGER or
    /// AWS_ENDPOINT_URL, else AWS's endpoint for the region.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// The file name a secret shows its value as when its SecretString is
    /// not a JSON object (plain text), or when it is a SecretBinary. A
    /// JSON object's keys are files of their own.
    #[arg(long, value_name = "NAME", default_value = crate::store::aws::DEFAULT_PLAIN_KEY)]
    pub plain_key: String,

    /// Days a secret deleted through a --writable mount (`rmdir` of its
    /// directory: DeleteSecret) stays restorable with `aws secretsmanager
    /// restore-secret` before AWS deletes it for good: 7 to 30, as AWS
    /// takes them. A secret is never deleted without this window.
    #[arg(long, value_name = "DAYS", default_value_t = crate::store::aws::DEFAULT_RECOVERY_DAYS)]
    pub recovery_window: u64,
}

/// `secretfs store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create an empty store file encrypted to every --recipient and to
    /// the identity of --identity (kept in it: later writes encrypt to
    /// them too). An --identity FILE that does not exist yet is created
    /// (a new key, mode 0600, as age-keygen writes it). Refuses an
    /// existing store file.
    #[command(after_help = "Examples:\n  \
secretfs store init file:app.age --identity key.txt      # makes key.txt when missing\n  \
secretfs mount file:app.age /mnt --identity key.txt --writable\n  \
secretfs store init file:team.age --recipient age1... --recipient age1...\n  \
secretfs store init file:app.age --identity ~/.ssh/id_ed25519 --recipient \"$(cat bob.pub)\"")]
    Init {
        /// The store to create: `file:PATH`.
        source: String,
        /// A recipient, repeatable: an age public key (`age1...`) or an
        /// SSH public key (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`).
        #[arg(long = "recipient", value_name = "RECIPIENT", action = clap::ArgAction::Append)]
        recipients: Vec<String>,
        #[command(flatten)]
        age: AgeArgs,
    },
}

/// How secretfs logs in to Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    /// A token: --token-file, VAULT_TOKEN or ~/.vault-token.
    Token,
    /// AppRole: role ID and secret ID from files.
    Approle,
    /// TLS certificate: the client certificate of --client-cert.
    Cert,
    /// Kubernetes: the pod's service account token.
    Kubernetes,
}

/// Cache and freshness.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cache")]
pub struct CacheArgs {
    /// How long a fetched folder listing or secret is served before it is fetched again.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,

    /// How long "no such name" answers are remembered (capped at --ttl).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub negative_ttl: Duration,

    /// While Vault is unreachable, keep serving cached values this long past
    /// their TTL (with a warning in the log); then EIO. 0s disables.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub stale_if_error: Duration,

    /// No refresh ahead: each value is fetched again by the first reader
    /// that finds it expired. By default a value read in the last tenth of
    /// its TTL is refreshed in the background before it expires (readers
    /// do not wait, and all keys of a secret change version at once).
    #[arg(long)]
    pub blocking_refresh: bool,

    /// Most folder listings and, separately, most secrets kept in memory (LRU).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_entries: u64,

    /// Most inodes (names the kernel was shown) kept in memory, about 160
    /// bytes each. Past it the kernel is asked to drop the entries looked
    /// up longest ago, down to nine tenths; it keeps those in use (open
    /// files, working directories), paths something is mounted on are
    /// spared, and a dropped name is looked up again when next used.
    /// 0: no bound, the table follows what the kernel keeps cached (it
    /// drops entries under memory pressure).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_inodes: u64,
}

/// How files look.
#[derive(Debug, Args)]
#[command(next_help_heading = "Files")]
pub struct FileArgs {
    /// Owner of all files and directories (default: the mounting user).
    /// Another user than the mounting one implies --allow-other, so that
    /// the owner can read its files (the modes still decide who reads).
    #[arg(long)]
    pub uid: Option<u32>,

    /// Group of all files and directories (default: the mounting user's
    /// group). Another group than the mounting user's implies --allow-other.
    #[arg(long)]
    pub gid: Option<u32>,

    /// Permission bits of key files, in octal.
    #[arg(long, value_name = "MODE", default_value = "0400", value_parser = parse_mode)]
    pub file_mode: u16,

    /// Permission bits of directories, in octal.
    #[arg(long, value_name = "MODE", default_value = "0500", value_parser = parse_mode)]
    pub dir_mode: u16,

    /// Let other users than the mounting one use the mount (modes still apply).
    /// Non-root users need `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    pub allow_other: bool,

    /// Read-only mount: every change fails with EROFS. This is the default;
    /// the flag (and -o ro) is accepted to say so. Refused with --writable.
    #[arg(long, conflicts_with = "writable")]
    pub ro: bool,

    /// Write changes back to the store (echo > KEY, cp, mv, rm, mkdir,
    /// editors): a changed file is written when it is closed. Without it
    /// the mount is read-only. -o rw does not do this (mount(8) always
    /// passes rw); -o writable does.
    #[arg(long)]
    pub writable: bool,

    /// How secrets show: `keys` (a directory per secret, a file per key),
    /// `json` (a file P.json per secret: its data as one JSON object),
    /// `env` (a file P.env per secret: KEY=value lines for source,
    /// EnvironmentFile= or dotenv), or `templates:DIR` (each DIR/X.tmpl is a
    /// read-only file X at the root, rendered on read with minijinja).
    /// Folders are directories in the keys, json and env layouts.
    #[arg(long, value_name = "LAYOUT", default_value = "keys", value_parser = parse_layout)]
    pub layout: Layout,

    /// Largest value a write may store (bytes; K, M suffixes); larger writes fail with EFBIG.
    #[arg(long, value_name = "SIZE", default_value = "512K", value_parser = parse_size)]
    pub max_value_size: u64,
}

/// How the mount is served and guarded: audit log, --on-change hook,
/// metrics, access rules, memory locking, FUSE threads. Shown under the
/// same heading as [`FileArgs`], where these flags have always been.
#[derive(Debug, Args)]
#[command(next_help_heading = "Files")]
pub struct ServiceArgs {
    /// Append one JSON line per open of a key file and per change (create,
    /// write commit, truncate, unlink, rename, mkdir, rmdir; refused ones
    /// too) to this file: time, op, path, uid, gid, pid, process name and
    /// outcome, never the value. Every open then reaches the daemon, so
    /// read-only mounts lose their no-open fast path. Each line is written
    /// before the operation is answered; one that cannot be fails the
    /// operation (EIO). The file must be the daemon user's and 0600 (or
    /// stricter); SIGHUP reopens it after a rotation.
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,

    /// Send each audit line to syslog/journald as well (facility authpriv,
    /// ident secretfs). Needs --audit-log.
    #[arg(long, requires = "audit_log")]
    pub audit_syslog: bool,

    /// When a secret the mount holds changes in the store, run this shell
    /// command (sh -c, with the changed secrets' paths in the mount,
    /// one per line, in SECRETFS_CHANGED) or, as signal:NAME:PIDFILE,
    /// send a signal to the process whose id the file holds (e.g.
    /// signal:HUP:/run/nginx.pid; the pid file must be owned by root or
    /// secretfs's user and writable by no one else, else no signal is
    /// sent). Held secrets are then re-read once per
    /// --ttl even when nobody reads them. In -o form the command cannot
    /// contain commas: use the config file.
    #[arg(long, value_name = "HOOK", value_parser = crate::hook::Hook::parse)]
    pub on_change: Option<crate::hook::Hook>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464): store requests by operation and outcome with
    /// latencies, cache hits/misses/stale answers, refreshes, FUSE
    /// operations, kernel invalidations, open handles, token expiry.
    /// Never a path or a value. Off unless given; bind a loopback address
    /// unless the network is trusted.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Per-process access rule, repeatable: PATTERN:CONDITION[:CONDITION...].
    /// PATTERN is a path in the mount (`*` and `?` within a name, `**` for
    /// any depth; a directory covers its files); a CONDITION is uid=N,
    /// gid=N, user=NAME, group=NAME or exe=PATH[@sha256=HEX] (the caller's
    /// /proc/PID/exe), all of which must hold. A file some rule covers
    /// opens only for a caller a covering rule lets in; anyone else gets
    /// EACCES (audited). E.g. db/PASSWORD:exe=/usr/bin/myapp,
    /// app/**:uid=1000. With rules, every open reaches the daemon.
    #[arg(long = "allow", value_name = "RULE", action = clap::ArgAction::Append)]
    pub allow: Vec<String>,

    /// File of --allow rules, one per line (# comments), repeatable.
    #[arg(long, value_name = "PATH", action = clap::ArgAction::Append)]
    pub allow_file: Vec<PathBuf>,

    /// Lock the daemon's memory (mlockall) so secret values never reach swap.
    /// Needs CAP_IPC_LOCK (root has it) or a high RLIMIT_MEMLOCK.
    #[arg(long)]
    pub mlock: bool,

    /// FUSE request threads. Requests that wait on Vault never hold them
    /// (store threads do), so one answers fastest: each more thread adds a
    /// wakeup of a cold thread to every request that reaches the daemon.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
}

/// Parses a layout name (`keys`, `json`, `env`, `templates:DIR`).
pub fn parse_layout(s: &str) -> Result<Layout, String> {
    match s.trim().parse()? {
        // Absolute: the daemon may run from another directory.
        Layout::Templates(dir) if !dir.is_dir() => Err(format!(
            "templates:{}: no such folder (templates:DIR names the folder holding the *.tmpl files)",
            dir.display()
        )),
        Layout::Templates(dir) => {
            let dir = std::path::absolute(&dir)
                .map_err(|e| format!("templates folder {}: {e}", dir.display()))?;
            crate::fs::template::check_folder(&dir)?;
            Ok(Layout::Templates(dir))
        }
        other => Ok(other),
    }
}

/// Parses `30s`, `500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 5m)"))
}

/// Parses a size in bytes: `1024`, `512K`, `1M`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512K"))?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        _ => return Err(format!("{s:?} is not a size such as 512K")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses an octal mode such as `0400` or `440`.
pub fn parse_mode(s: &str) -> Result<u16, String> {
    let digits = s.trim().trim_start_matches("0o");
    match u16::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal mode such as 0400")),
    }
}

/// Options that mount(8), fstab and systemd pass along and that mean nothing to us.
const IGNORED_OPTIONS: &[&str] = &[
    "defaults", "rw", "_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "dev",
    "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
];

fn ignored(option: &str) -> bool {
    IGNORED_OPTIONS.contains(&option)
        || option.starts_with("x-systemd.")
        || option.starts_with("comment=")
}

/// Rewrites `-o a=b,flag` into `--a=b --flag` (with `_` read as `-`), so that
/// every long option works as a mount option and clap checks them all.
pub fn expand_mount_options(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().into_owned();
        let list = if text == "-o" {
            match iter.next() {
                Some(v) => v.to_string_lossy().into_owned(),
                None => {
                    out.push(arg);
                    continue;
                }
            }
        } else if let Some(rest) = text
            .strip_prefix("-o")
            .filter(|r| !r.is_empty() && !text.starts_with("--"))
        {
            rest.to_string()
        } else {
            out.push(arg);
            continue;
        };
        // Whether the option pushed last was `addr=`: the URLs after it
        // (`-o addr=http://a:8200,http://b:8200`) are more of its nodes.
        let mut in_addr = false;
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if in_addr && !opt.contains('=') && opt.contains("://") {
                if let Some(last) = out.last_mut() {
                    last.push(format!(",{opt}"));
                }
                continue;
            }
            in_addr = opt.starts_with("addr=");
            if ignored(opt) {
                continue;
            }
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let key = key.replace('_', "-");
            out.push(match value {
                Some(v) => OsString::from(format!("--{key}={v}")),
                None => OsString::from(format!("--{key}")),
            });
        }
    }
    out
}

/// The mount-helper form `secretfs SOURCE MOUNTPOINT [-o OPTS]` (what
/// `mount.fuse3` runs) becomes `secretfs mount --background SOURCE MOUNTPOINT ...`.
/// Anything that does not look like that form is left to clap, so that a
/// mistyped subcommand gets clap's "unrecognized subcommand" and its
/// suggestion rather than an attempt to mount it.
pub fn expand_helper_form(mut args: Vec<OsString>) -> Vec<OsString> {
    if looks_like_helper_form(&args) {
        args.insert(1, OsString::from("mount"));
        args.insert(2, OsString::from("--background"));
    }
    args
}

/// Whether `args` (with the program name first) are the mount-helper form:
/// the first argument is neither an option nor a subcommand, and either
/// `-o` is given (mount.fuse3 always passes it) or there are exactly two
/// positional arguments, the second an absolute path or an existing
/// directory, and the first is not a near miss of a subcommand's name
/// (`secretfs statsu /mnt` is a typo, not a KV mount named `statsu`).
fn looks_like_helper_form(args: &[OsString]) -> bool {
    let Some(first) = args.get(1).map(|a| a.to_string_lossy().into_owned()) else {
        return false;
    };
    let cli = Cli::command();
    let subcommands: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .chain(std::iter::once("help".to_string()))
        .collect();
    if first.starts_with('-') || subcommands.contains(&first) {
        return false;
    }
    let Some(mount) = cli.find_subcommand("mount") else {
        return false;
    };
    // A long option of `secretfs mount` that takes a value from the next
    // argument (`--ttl 5s`): that value is no positional argument.
    let takes_value = |long: &str| {
        mount
            .get_arguments()
            .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
    };
    let mut positionals = Vec::new();
    let mut has_o = false;
    let mut iter = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == "--" {
            positionals.extend(iter.by_ref().map(|a| a.into_owned()));
        } else if let Some(long) = arg.strip_prefix("--") {
            if !long.contains('=') && takes_value(long) {
                iter.next();
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            if short.starts_with('o') {
                has_o = true;
                if short == "o" {
                    iter.next();
                }
            }
        } else {
            positionals.push(arg.into_owned());
        }
    }
    if has_o {
        return true;
    }
    let [_, mountpoint] = positionals.as_slice() else {
        return false;
    };
    let mountpoint = std::path::Path::new(mountpoint);
    let near_miss =
        !first.contains('/') && subcommands.iter().any(|c| edit_distance(c, &first) <= 2);
    (mountpoint.is_absolute() || mountpoint.is_dir()) && !near_miss
}

/// Levenshtein distance between two short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Replaces `--config FILE` (or `--config=FILE`) with the options the TOML
/// file holds, placed before all others so that the command line wins.
pub fn expand_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut path = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            path = iter.next().map(PathBuf::from);
        } else if let Some(p) = text.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        } else {
            rest.push(arg);
        }
    }
    let Some(path) = path else {
        return Ok(rest);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("config file {}: {}", path.display(), e.message()))?;
    let mut from_file = Vec::new();
    let keys = config_keys();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        if matches!(key.as_str(), "token" | "vault_token") {
            return Err(format!(
                "config file {}: a token does not belong in a config file; use token_file",
                path.display()
            ));
        }
        if !keys.contains(&key.replace('-', "_")) {
            return Err(unknown_config_key(&path, &text, &key, &keys));
        }
        match value {
            toml::Value::Boolean(true) => from_file.push(OsString::from(flag)),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => from_file.push(OsString::from(format!("{flag}={s}"))),
            toml::Value::Integer(i) => from_file.push(OsString::from(format!("{flag}={i}"))),
            // A repeatable option (`allow = ["a:uid=1", "b:uid=2"]`).
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
                for item in items.iter().filter_map(toml::Value::as_str) {
                    from_file.push(OsString::from(format!("{flag}={item}")));
                }
            }
            other => {
                return Err(format!(
                    "config file {}: {key} = {other} is not a string, number, boolean or list of strings",
                    path.display()
                ))
            }
        }
    }
    // After "secretfs mount": the subcommand must stay first.
    let at = rest
        .iter()
        .position(|a| a == "mount")
        .map_or(rest.len(), |i| i + 1);
    rest.splice(at..at, from_file);
    Ok(rest)
}

/// The keys a config file may hold: the long options of `secretfs mount`
/// (with `_` for `-`), but not `config` itself.
fn config_keys() -> Vec<String> {
    let cli = Cli::command();
    let Some(mount) = cli.find_subcommand("mount") else {
        return Vec::new();
    };
    mount
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .filter(|long| !matches!(*long, "config" | "help" | "version"))
        .map(|long| long.replace('-', "_"))
        .collect()
}

/// "config file F, line N: unknown key `tll`; did you mean `ttl`?"
fn unknown_config_key(path: &std::path::Path, text: &str, key: &str, keys: &[String]) -> String {
    // The line that sets it: `key = ...` or `"key" = ...`.
    let line = text.lines().position(|l| {
        let l = l.trim_start();
        let rest = l
            .strip_prefix(key)
            .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| l.strip_prefix(&format!("'{key}'")));
        rest.is_some_and(|r| r.trim_start().starts_with('='))
    });
    let at = match line {
        Some(n) => format!("config file {}, line {}", path.display(), n + 1),
        None => format!("config file {}", path.display()),
    };
    let wanted = key.replace('-', "_");
    let nearest = keys
        .iter()
        .map(|k| (edit_distance(k, &wanted), k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3));
    match nearest {
        Some((_, k)) => format!("{at}: unknown key `{key}`; did you mean `{k}`?"),
        None => format!(
            "{at}: unknown key `{key}` (the keys are the long options of \
             `secretfs mount --help`, with _ for -)"
        ),
    }
}

/// Rewrites the process arguments the three ways above, in order.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // `exec` has no mount options, and what follows `--` is the command's
    // own: `-o` or `--config` there must reach it untouched.
    if args.get(1).is_some_and(|a| a == "exec") {
        return Ok(args);
    }
    expand_config_file(expand_mount_options(expand_helper_form(args)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Cli, clap::Error> {
        let args = expand(args.iter().map(OsString::from).collect()).expect("expand");
        Cli::try_parse_from(args)
    }

    fn read_only(m: &MountArgs) -> bool {
        m.files.layout.read_only(m.files.writable)
    }

    fn mount_args(args: &[&str]) -> MountArgs {
        match parse_strs(args).unwrap().command {
            Command::Mount(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_mount_helper_form_mounts_in_the_background() {
        let m = mount_args(&["secretfs", "secret/app", "/mnt", "-o", "ro,_netdev"]);
        assert!(m.background && m.files.ro && read_only(&m));
        assert_eq!(m.source, "secret/app");
        let m = mount_args(&["secretfs", "secret/app", "/mnt", "-o", "foreground"]);
        assert!(m.foreground);
    }

    #[test]
    fn the_mount_helper_form_is_what_mount_fuse3_runs() {
        // mount.fuse3 runs `secretfs SOURCE MOUNTPOINT -o OPTIONS`, with an
        // absolute mountpoint and always some options.
        let m = mount_args(&["secretfs", "kv", "/run/secrets", "-o", "rw,dev,suid"]);
        assert!(m.background);
        assert_eq!(m.source, "kv");
        // mount(8) always passes rw: it is no switch, the mount stays read-only.
        assert!(read_only(&m), "-o rw made the mount writable");
        let m = mount_args(&["secretfs", "kv", "/run/secrets", "-o", "rw,writable"]);
        assert!(!read_only(&m) && m.files.writable);
        // By hand, without -o: two positional arguments, the second a path.
        let m = mount_args(&["secretfs", "secret/app", "/mnt", "-f", "--ttl", "5s"]);
        assert!(m.background && m.foreground);
        assert_eq!(m.cache.ttl, Duration::from_secs(5));
        let m = mount_args(&["secretfs", "secret/app", "/mnt", "--log-file", "/var/log/x"]);
        assert_eq!(m.log_file, Some(PathBuf::from("/var/log/x")));
    }

    fn usage_error(args: &[&str]) -> String {
        match parse_strs(args) {
            Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn a_mistyped_subcommand_is_not_taken_for_the_mount_helper_form() {
        let err = usage_error(&["secretfs", "moutn", "secret/", "mp"]);
        assert!(err.contains("unrecognized subcommand 'moutn'"), "{err}");
        assert!(err.contains("'mount'"), "{err}");
        let err = usage_error(&["secretfs", "moutn", "secret/", "/tmp/x"]);
        assert!(err.contains("unrecognized subcommand 'moutn'"), "{err}");
        // `completions` is a subcommand; a near miss of it is a typo.
        let err = usage_error(&["secretfs", "completion", "bash"]);
        assert!(
            err.contains("unrecognized subcommand 'completion'") && err.contains("'completions'"),
            "{err}"
        );
        // Two arguments, the second a path, but the first a near miss of
        // `status`: a typo, not a KV mount named statsu.
        let err = usage_error(&["secretfs", "statsu", "/mnt"]);
        assert!(
            err.contains("unrecognized subcommand 'statsu'") && err.contains("'status'"),
            "{err}"
        );
        let err = usage_error(&["secretfs", "secret/"]);
        assert!(err.contains("unrecognized subcommand 'secret/'"), "{err}");
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("mount", "moutn"), 2);
        assert_eq!(edit_distance("status", "stats"), 1);
        assert_eq!(edit_distance("mount", "mount"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("secret", "status"), 5);
    }

    #[test]
    fn a_config_file_sets_options_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(
            &file,
            "ttl = \"5s\"\nuid = 1000\nallow_other = true\nro = false\nwritable = true\n",
        )
        .unwrap();
        let conf = format!("config={}", file.display());
        let m = mount_args(&[
            "secretfs", "mount", "secret/", "/mnt", "-o", &conf, "--ttl", "7s",
        ]);
        assert_eq!(m.cache.ttl, Duration::from_secs(7));
        assert_eq!(m.files.uid, Some(1000));
        assert!(m.files.allow_other && !m.files.ro && !read_only(&m));
    }

    #[test]
    fn ro_and_writable_together_are_refused() {
        for args in [
            &["secretfs", "mount", "secret/", "/mnt", "--ro", "--writable"][..],
            &["secretfs", "secret/", "/mnt", "-o", "writable,ro"][..],
        ] {
            let err = usage_error(args);
            assert!(
                err.contains("'--ro' cannot be used with '--writable'")
                    || err.contains("'--writable' cannot be used with '--ro'"),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "ro = true\n").unwrap();
        let conf = format!("config={}", file.display());
        usage_error(&["secretfs", "secret/", "/mnt", "-o", &conf, "-o", "writable"]);
    }

    #[test]
    fn the_recovery_window_comes_from_the_flag_o_or_a_config_file() {
        let m = mount_args(&["secretfs", "mount", "aws-sm:prod/", "/mnt"]);
        assert_eq!(m.aws.recovery_window, 30);
        let m = mount_args(&[
            "secretfs",
            "mount",
            "aws-sm:",
            "/mnt",
            "--recovery-window",
            "7",
        ]);
        assert_eq!(m.aws.recovery_window, 7);
        let m = mount_args(&[
            "secretfs",
            "aws-sm:",
            "/mnt",
            "-o",
            "region=eu-west-1,recovery_window=14",
        ]);
        assert_eq!(m.aws.recovery_window, 14);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "recovery_window = 21\n").unwrap();
        let conf = format!("config={}", file.display());
        let m = mount_args(&["secretfs", "mount", "aws-sm:", "/mnt", "-o", &conf]);
        assert_eq!(m.aws.recovery_window, 21);
    }

    #[test]
    fn approle_settings_come_from_a_config_file_or_o() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(
            &file,
            "auth = \"approle\"\nrole_id_file = \"/etc/r\"\nsecret_id_file = \"/etc/s\"\n",
        )
        .unwrap();
        let conf = format!("config={}", file.display());
        let m = mount_args(&["secretfs", "mount", "secret/", "/mnt", "-o", &conf]);
        assert_eq!(m.vault.auth, AuthMethod::Approle);
        assert_eq!(m.vault.role_id_file, Some(PathBuf::from("/etc/r")));
        assert_eq!(m.vault.secret_id_file, Some(PathBuf::from("/etc/s")));
        let m = mount_args(&[
            "secretfs",
            "mount",
            "secret/",
            "/mnt",
            "-o",
            "auth=approle,role_id_file=/r,auth_mount=machines",
        ]);
        assert_eq!(m.vault.auth, AuthMethod::Approle);
        assert_eq!(m.vault.auth_mount.as_deref(), Some("machines"));
    }

    #[test]
    fn an_unknown_key_in_a_config_file_names_the_file_the_line_and_the_nearest_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "# app\nuid = 1000\n  tll = \"5s\"\n").unwrap();
        let conf = format!("--config={}", file.display());
        let args = ["secretfs", "mount", "secret/", "/mnt", &conf];
        let err = expand(args.iter().map(OsString::from).collect()).unwrap_err();
        assert_eq!(
            err,
            format!(
                "config file {}, line 3: unknown key `tll`; did you mean `ttl`?",
                file.display()
            )
        );
        std::fs::write(&file, "zzzzzz = 1\nfile-mode = \"0440\"\n").unwrap();
        let err = expand(args.iter().map(OsString::from).collect()).unwrap_err();
        assert!(
            err.contains(", line 1: unknown key `zzzzzz` (the keys are"),
            "{err}"
        );
        // Hidden and internal options are no keys.
        std::fs::write(&file, "ready_fd = 3\n").unwrap();
        let err = expand(args.iter().map(OsString::from).collect()).unwrap_err();
        assert!(err.contains("unknown key `ready_fd`"), "{err}");
    }

    #[test]
    fn a_token_in_a_config_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "token = \"s.abc\"\n").unwrap();
        let args = [
            "secretfs",
            "mount",
            "secret/",
            "/mnt",
            "--config",
            file.to_str().unwrap(),
        ];
        let err = expand(args.iter().map(OsString::from).collect()).unwrap_err();
        assert!(
            err.contains("token_file") && !err.contains("s.abc"),
            "{err}"
        );
    }

    #[test]
    fn defaults_match_the_design() {
        let m = mount_args(&["secretfs", "mount", "secret/", "/mnt"]);
        assert_eq!(m.cache.ttl, Duration::from_secs(30));
        assert_eq!(m.files.file_mode, 0o400);
        assert_eq!(m.files.dir_mode, 0o500);
        assert!(!m.files.allow_other && read_only(&m));
    }

    #[test]
    fn help_readme_and_the_default_agree_that_the_mount_is_read_only() {
        let m = mount_args(&["secretfs", "mount", "secret/", "/mnt"]);
        assert!(read_only(&m), "the default mount is read-only");
        // One space between words, however clap wraps the lines.
        let words = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let help = words(Cli::command().render_long_help().to_string());
        assert!(!help.contains("read-write"), "{help}");
        assert!(
            help.contains("The mount is read-only unless started with --writable"),
            "{help}"
        );
        let mount_help = Cli::command()
            .find_subcommand_mut("mount")
            .map(|c| words(c.render_long_help().to_string()))
            .unwrap_or_default();
        assert!(mount_help.contains("This is the default"), "{mount_help}");
        assert!(
            mount_help.contains("Without it the mount is read-only"),
            "{mount_help}"
        );
        assert!(mount_help.contains("-o rw, which mount(8) always passes, is ignored"));
        let readme = words(include_str!("../README.md").to_string());
        assert!(
            readme.contains("The mount is read-only unless started with `--writable`"),
            "README's first section must say the mount is read-only by default"
        );
        assert!(
            !readme.contains("read-write unless"),
            "README still says read-write"
        );
    }

    #[test]
    fn comma_options_set_the_same_fields_as_flags() {
        let m = mount_args(&[
            "secretfs",
            "mount",
            "secret/",
            "/mnt",
            "-o",
            "ttl=2s,uid=1000,allow_other,ro,file_mode=0440,_netdev,x-systemd.requires=x.service",
        ]);
        assert_eq!(m.cache.ttl, Duration::from_secs(2));
        assert_eq!(m.files.uid, Some(1000));
        assert_eq!(m.files.file_mode, 0o440);
        assert!(m.files.allow_other && m.files.ro);
    }

    #[test]
    fn allow_rules_come_from_flags_o_and_a_config_file_and_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(
            &file,
            "allow = [\"a/**:uid=1\", \"b:exe=/usr/bin/b\"]\nallow_file = \"/etc/rules\"\n",
        )
        .unwrap();
        let conf = format!("config={}", file.display());
        let m = mount_args(&[
            "secretfs",
            "secret/",
            "/mnt",
            "-o",
            &conf,
            "-o",
            "allow=db/PASSWORD:exe=/usr/bin/myapp:uid=0,ro",
            "--allow",
            "c/*:gid=5",
        ]);
        assert_eq!(
            m.service.allow,
            [
                "a/**:uid=1",
                "b:exe=/usr/bin/b",
                "db/PASSWORD:exe=/usr/bin/myapp:uid=0",
                "c/*:gid=5"
            ]
        );
        assert_eq!(m.service.allow_file, [PathBuf::from("/etc/rules")]);
    }

    #[test]
    fn several_addresses_come_from_flags_commas_or_mount_options() {
        let want = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        let m = mount_args(&[
            "secretfs",
            "mount",
            "secret/",
            "/mnt",
            "--addr",
            "http://a:1",
            "--addr",
            "http://b:2",
        ]);
        assert_eq!(m.vault.addr, want);
        let m = mount_args(&[
            "secretfs",
            "mount",
            "secret/",
            "/mnt",
            "--addr",
            "http://a:1,http://b:2",
        ]);
        assert_eq!(m.vault.addr, want);
        let m = mount_args(&[
            "secretfs",
            "mount",
            "secret/",
            "/mnt",
            "-o",
            "ttl=5s,addr=http://a:1,http://b:2,allow_other",
        ]);
        assert_eq!(m.vault.addr, want);
        assert!(m.files.allow_other);
    }

    #[test]
    fn exec_takes_sources_then_the_command_untouched_after_the_dashes() {
        let cli = parse_strs(&[
            "secretfs",
            "exec",
            "--upcase",
            "secret/a",
            "secret/b/",
            "--ttl",
            "5s",
            "--",
            "ls",
            "-o",
            "--config",
            "x.toml",
            "--ttl",
        ])
        .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(e.sources, ["secret/a", "secret/b/"]);
        assert_eq!(e.command, ["ls", "-o", "--config", "x.toml", "--ttl"]);
        assert_eq!(e.ttl, Duration::from_secs(5));
        assert!(e.upcase && !e.no_override);
        assert_eq!(e.on_change, crate::exec::OnChange::Restart);
        assert_eq!(e.stop_signal, crate::exec::Signal(libc::SIGTERM));
        assert_eq!(e.stop_timeout, Duration::from_secs(10));
        let cli = parse_strs(&[
            "secretfs",
            "exec",
            "--on-change",
            "signal:usr1",
            "--stop-signal",
            "INT",
            "s/x",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            e.on_change,
            crate::exec::OnChange::Signal(crate::exec::Signal(libc::SIGUSR1))
        );
        assert_eq!(e.stop_signal, crate::exec::Signal(libc::SIGINT));
        // A command and at least one SOURCE are required.
        usage_error(&["secretfs", "exec", "secret/a"]);
        usage_error(&["secretfs", "exec", "--", "env"]);
        usage_error(&[
            "secretfs",
            "exec",
            "s/x",
            "--on-change",
            "reload",
            "--",
            "env",
        ]);
    }

    #[test]
    fn a_usage_error_shows_no_option_as_required() {
        // clap's usage line after an error lists the options given (also
        // from the environment: VAULT_ADDR) as if they were required.
        for args in [
            &["secretfs", "exec", "--addr", "http://x:1", "secret/a"][..],
            &["secretfs", "mount", "--addr", "http://x:1", "secret/a"][..],
        ] {
            let err = usage_error(args);
            let usage = err
                .lines()
                .find(|l| l.starts_with("Usage:"))
                .unwrap_or_else(|| panic!("no usage line: {err}"));
            assert!(!usage.contains("--addr"), "{args:?}: {usage}");
            assert!(usage.contains("[OPTIONS]"), "{args:?}: {usage}");
        }
    }

    #[test]
    fn layers_are_given_in_order_as_flags_or_mount_options() {
        let m = mount_args(&[
            "secretfs",
            "mount",
            "secret/shop",
            "/mnt",
            "--layer",
            "secret/prod",
            "-o",
            "layer=secret/api,ttl=5s",
        ]);
        assert_eq!(m.layer, ["secret/prod", "secret/api"]);
        let m = mount_args(&[
            "secretfs",
            "secret/shop",
            "/mnt",
            "-o",
            "layer=a/b,layer=c/d",
        ]);
        assert_eq!(m.layer, ["a/b", "c/d"]);
    }

    #[test]
    fn a_store_file_is_a_source_with_its_identity_from_a_flag_o_or_a_config_file() {
        let m = mount_args(&[
            "secretfs",
            "file:/etc/secretfs/app.age",
            "/mnt",
            "-o",
            "identity=/etc/secretfs/key.txt,layer=file:/home/me/overrides.age",
        ]);
        assert!(m.background);
        assert_eq!(m.source, "file:/etc/secretfs/app.age");
        assert_eq!(m.age.identity, Some(PathBuf::from("/etc/secretfs/key.txt")));
        assert_eq!(m.layer, ["file:/home/me/overrides.age"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "identity = \"/k.txt\"\nlayer = [\"file:/o.age\"]\n").unwrap();
        let conf = format!("config={}", file.display());
        let m = mount_args(&["secretfs", "mount", "secret/app", "/mnt", "-o", &conf]);
        assert_eq!(m.age.identity, Some(PathBuf::from("/k.txt")));
        assert_eq!(m.layer, ["file:/o.age"]);
        let cli = parse_strs(&[
            "secretfs",
            "store",
            "init",
            "file:/x.age",
            "--recipient",
            "age1a",
            "--recipient",
            "age1b",
        ])
        .unwrap();
        let Command::Store(StoreCommand::Init {
            source, recipients, ..
        }) = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!((source.as_str(), recipients.len()), ("file:/x.age", 2));
    }

    #[test]
    fn unknown_mount_options_are_refused() {
        assert!(parse_strs(&["secretfs", "mount", "secret/", "/mnt", "-o", "bogus=1"]).is_err());
    }

    #[test]
    fn the_token_is_not_a_command_line_option() {
        assert!(parse_strs(&["secretfs", "mount", "secret/", "/mnt", "--token", "x"]).is_err());
        assert!(parse_strs(&["secretfs", "mount", "secret/", "/mnt", "-o", "token=x"]).is_err());
    }

    #[test]
    fn modes_and_durations_parse() {
        assert_eq!(parse_mode("0400"), Ok(0o400));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("77777").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12Q").is_err());
    }
}
