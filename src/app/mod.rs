//! The app layer: what `main` starts (`secretfs mount`, `exec`, `status`)
//! and the conversions from the command line's clap structs into the
//! options each layer owns. Options flow one way: this layer (with
//! `main.rs` and `mount`) is the only one that reads `crate::cli`; the
//! layers below take their own types (docs/DEVELOPMENT.md).

pub mod exec;
pub mod vault;

/// How to open the SOURCEs that are not on Vault (`file:`, `aws-sm:`),
/// from their flags; `timeout` is `--timeout`; every store counts its
/// requests with `meter`.
pub fn store_settings(
    age: &crate::cli::AgeArgs,
    aws: &crate::cli::AwsArgs,
    timeout: std::time::Duration,
    meter: crate::metrics::Meter,
) -> crate::store::StoreSettings {
    crate::store::StoreSettings {
        file: crate::store::file::FileSettings {
            identity: age.identity.clone(),
            passphrase_file: age.identity_passphrase_file.clone(),
            timeout,
        },
        aws: crate::store::aws::AwsSettings {
            region: aws.region.clone(),
            profile: aws.profile.clone(),
            endpoint: aws.endpoint.clone(),
            plain_key: aws.plain_key.clone(),
            recovery_days: aws.recovery_window,
            timeout,
        },
        meter,
    }
}
