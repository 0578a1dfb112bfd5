//! AWS Secrets Manager as a store (`secretfs mount aws-sm:prod/ /mnt
//! --region eu-west-1`): secret names split on `/` into folders, a secret
//! whose SecretString is a JSON object shows its keys as files (see
//! `mapping`), and writes make new versions, checked against the version
//! read (see `client`). docs/AWS-SM.md says what is guaranteed.
//!
//! The SDK is behind the `aws-sm` cargo feature (on by default): without
//! it an `aws-sm:` SOURCE is refused with a sentence saying so.

#[cfg(feature = "aws-sm")]
mod client;
pub mod mapping;

use std::time::Duration;

use super::{Connected, SecretPath};
use crate::start_error::StartError;

/// The prefix of a SOURCE on AWS Secrets Manager.
pub const SCHEME: &str = "aws-sm:";

/// The key a secret that is not a JSON object shows as, by default.
pub const DEFAULT_PLAIN_KEY: &str = "value";

/// How many days a secret deleted through the mount stays restorable, by
/// default: AWS's own default.
pub const DEFAULT_RECOVERY_DAYS: u64 = 30;

/// How many days a secret deleted through the mount (`rmdir`) stays
/// restorable before AWS deletes it for good: DeleteSecret's
/// RecoveryWindowInDays, within what AWS takes (7 to 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryWindow(u8);

impl RecoveryWindow {
    /// The shortest window AWS takes.
    pub const MIN_DAYS: u64 = 7;
    /// The longest window AWS takes.
    pub const MAX_DAYS: u64 = 30;

    /// A window of `days`, or `None` when AWS would refuse it.
    pub fn days(days: u64) -> Option<RecoveryWindow> {
        if !(Self::MIN_DAYS..=Self::MAX_DAYS).contains(&days) {
            return None;
        }
        u8::try_from(days).ok().map(RecoveryWindow)
    }

    /// Its length in days, as DeleteSecret takes it.
    pub fn in_days(self) -> i64 {
        i64::from(self.0)
    }
}

/// How to reach AWS Secrets Manager, from the command line. Whatever is
/// `None` is found as the AWS CLI finds it (environment, shared config and
/// credentials files, web identity, instance metadata).
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// `--region` (else AWS_REGION, AWS_DEFAULT_REGION, the profile).
    pub region: Option<String>,
    /// `--profile` (else AWS_PROFILE, else `default`).
    pub profile: Option<String>,
    /// `--endpoint` (else AWS_ENDPOINT_URL…, else AWS's own).
    pub endpoint: Option<String>,
    /// The key a plain-string or binary secret shows as.
    pub plain_key: String,
    /// `--recovery-window`: days a secret deleted through the mount stays
    /// restorable, as given; `connect` refuses what AWS would not take.
    pub recovery_days: u64,
    /// Deadline of each operation's requests (`--timeout`).
    pub timeout: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            profile: None,
            endpoint: None,
            plain_key: DEFAULT_PLAIN_KEY.to_string(),
            recovery_days: DEFAULT_RECOVERY_DAYS,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The folder an `aws-sm:` SOURCE names (`aws-sm:prod/` is `prod`;
/// `aws-sm:` the whole account and region); `None` for another SOURCE.
pub fn parse(source: &str) -> Option<SecretPath> {
    source.strip_prefix(SCHEME).map(SecretPath::parse)
}

/// Opens SOURCE when it is on AWS Secrets Manager (`aws-sm:PREFIX`), as a
/// store ready for the core (counted for --metrics by `meter`);
/// `Ok(None)` for any other SOURCE.
pub fn connect(
    source: &str,
    settings: &AwsSettings,
    meter: &crate::metrics::Meter,
    rt: &tokio::runtime::Handle,
) -> Result<Option<Connected>, StartError> {
    let Some(root) = parse(source) else {
        return Ok(None);
    };
    if settings.plain_key.is_empty() || settings.plain_key.contains('/') {
        return Err(StartError::Options(format!(
            "--plain-key {:?}: a key is a file name (not empty, no /)",
            settings.plain_key
        )));
    }
    let Some(window) = RecoveryWindow::days(settings.recovery_days) else {
        return Err(StartError::Options(format!(
            "--recovery-window {}: AWS keeps a deleted secret restorable for {} to {} days",
            settings.recovery_days,
            RecoveryWindow::MIN_DAYS,
            RecoveryWindow::MAX_DAYS
        )));
    };
    open(source, root, settings, window, meter, rt).map(Some)
}

#[cfg(feature = "aws-sm")]
fn open(
    source: &str,
    root: SecretPath,
    settings: &AwsSettings,
    window: RecoveryWindow,
    meter: &crate::metrics::Meter,
    rt: &tokio::runtime::Handle,
) -> Result<Connected, StartError> {
    let store = client::AwsStore::connect(source, settings, window, &root, rt.clone())?;
    tracing::info!(
        region = %store.region(),
        endpoint = %store.endpoint(),
        prefix = %root,
        "connected to AWS Secrets Manager"
    );
    Ok(Connected {
        store: std::sync::Arc::new(super::metered::Metered::new(store, meter.clone())),
        root,
    })
}

#[cfg(not(feature = "aws-sm"))]
fn open(
    source: &str,
    _root: SecretPath,
    _settings: &AwsSettings,
    _window: RecoveryWindow,
    _meter: &crate::metrics::Meter,
    _rt: &tokio::runtime::Handle,
) -> Result<Connected, StartError> {
    Err(StartError::Options(format!(
        "{source}: this secretfs was built without AWS Secrets Manager (cargo feature `aws-sm`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aws_source_names_its_prefix() {
        assert_eq!(parse("aws-sm:prod/").unwrap().as_str(), "prod");
        assert_eq!(parse("aws-sm:prod/app").unwrap().as_str(), "prod/app");
        assert!(parse("aws-sm:").unwrap().is_root());
        assert!(parse("secret/prod").is_none());
        assert!(parse("file:/x.age").is_none());
    }

    #[test]
    fn a_recovery_window_is_what_aws_takes_7_to_30_days() {
        assert_eq!(
            RecoveryWindow::days(7).map(RecoveryWindow::in_days),
            Some(7)
        );
        assert_eq!(
            RecoveryWindow::days(30).map(RecoveryWindow::in_days),
            Some(30)
        );
        for refused in [0, 6, 31, 256, u64::MAX] {
            assert_eq!(RecoveryWindow::days(refused), None, "{refused}");
        }
        assert!(RecoveryWindow::days(DEFAULT_RECOVERY_DAYS).is_some());
    }
}
