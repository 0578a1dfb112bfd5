//! The store on AWS Secrets Manager, through the official SDK.
//!
//! Every request goes through [`run`], the one place this store meets
//! time: it blocks on the request (the SDK's own retries included) under
//! what is left of the current operation's deadline (`--timeout`, see
//! `store::deadline`).
//!
//! A write with a precondition on the version read is two requests:
//! PutSecretValue with a private staging label ([`PENDING`]: the new
//! version is stored, AWSCURRENT does not move), then
//! UpdateSecretVersionStage moving AWSCURRENT to it *from the version
//! read*, which AWS refuses when that version is no longer current. A
//! refused move is a lost check-and-set: the staged version is left
//! without a label (AWS deprecates it) and the core reads again and
//! retries. docs/AWS-SM.md says how close to check-and-set this is.

use crate::store::Deadline;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager as sm;
use sm::config::http::HttpResponse;
use sm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use sm::primitives::Blob;
use sm::types::{Filter, FilterNameStringType, Tag};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::mapping::{self, Form, Payload};
use super::{AwsSettings, RecoveryWindow};
use crate::error::{Error, Result};
use crate::start_error::StartError;
use crate::store::{
    Capabilities, Health, Listing, Metadata, Permissions, Precondition, Revision, Secret,
    SecretData, SecretPath, SecretStore,
};

/// The staging label of a version written but not yet made current.
pub const PENDING: &str = "SECRETFS_PENDING";

/// The label of a secret's current version.
const CURRENT: &str = "AWSCURRENT";

/// How many forms of secrets are remembered before the memory is cleared.
const FORMS: usize = 10_000;

/// Runs `request` to its end on `rt`, under what is left of the current
/// operation's deadline (the whole `timeout` outside an operation): the
/// ONE function of this store that deals with time. Past the deadline the
/// request is dropped (cancelled) and the error says how long it had.
fn run<F: Future>(
    rt: &Handle,
    deadline: &Deadline,
    timeout: Duration,
    request: F,
) -> Result<F::Output> {
    let Some(budget) = deadline.left(timeout) else {
        return Err(Error::OutOfTime(timeout));
    };
    let timed = async move { tokio::time::timeout(budget, request).await };
    let outcome = match Handle::try_current().map(|h| h.runtime_flavor()) {
        // Not on a runtime thread (FUSE workers, the main thread).
        Err(_) => rt.block_on(timed),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| rt.block_on(timed)),
        Ok(_) => {
            return Err(Error::Unavailable(
                "a store request was made on a single-threaded runtime".into(),
            ))
        }
    };
    outcome.map_err(|_| Error::Timeout(budget))
}

/// A failed request: the error, and AWS's error code when it sent one.
struct Failed {
    code: Option<String>,
    error: Error,
}

impl Failed {
    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// No such secret, or one scheduled for deletion
    /// (InvalidRequestException): gone, as far as a reader can tell.
    fn is_gone(&self) -> bool {
        self.is("ResourceNotFoundException") || self.is("InvalidRequestException")
    }
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Error {
        f.error
    }
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed { code: None, error }
    }
}

/// Error codes that say the credential may not do this.
const DENIED: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// Error codes that say: too many requests (after the SDK's retries).
const THROTTLED: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

/// A failed SDK request as our error: `what` is the request (and the
/// secret), never a value.
fn failed<E>(what: &str, e: &SdkError<E, HttpResponse>) -> Failed
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e.code().map(str::to_string);
    let status = e.raw_response().map(|r| r.status().as_u16());
    let why = match (&code, e.message()) {
        (Some(code), Some(msg)) => format!("{what}: {code}: {msg}"),
        (Some(code), None) => format!("{what}: {code}"),
        _ => format!("{what}: {}", DisplayErrorContext(e)),
    };
    let c = code.as_deref().unwrap_or("");
    let error = if c == "ResourceNotFoundException" {
        Error::NotFound
    } else if DENIED.contains(&c) || status == Some(403) {
        Error::PermissionDenied(why)
    } else if THROTTLED.contains(&c) || status == Some(429) {
        Error::Throttled(why)
    } else if matches!(
        c,
        "InvalidParameterException" | "InvalidRequestException" | "ValidationException"
    ) {
        Error::Invalid(why)
    } else if e.as_service_error().is_some() && status.is_some_and(|s| s < 500) {
        Error::Protocol(why)
    } else {
        // 5xx, no connection, no answer, no credentials found.
        Error::Unavailable(why)
    };
    Failed { code, error }
}

/// Secrets in AWS Secrets Manager, in one account and region.
pub struct AwsStore {
    client: sm::Client,
    rt: Handle,
    timeout: Duration,
    plain_key: String,
    /// How long a deleted secret stays restorable (`--recovery-window`).
    window: RecoveryWindow,
    /// The folder of the SOURCE (what `health` lists).
    root: SecretPath,
    region: String,
    endpoint: String,
    /// Per secret name, the form of the version last read or written
    /// (and that version's id), so that a write keeps it.
    forms: Mutex<HashMap<String, (String, Form)>>,
    /// Whether DescribeSecret was refused (said once in the log).
    describe_denied: AtomicBool,
}

impl AwsStore {
    /// Finds the credentials and region as the AWS CLI does (the flags
    /// first) and checks that the store answers: `source` names the store
    /// in the errors, each one sentence for stderr.
    pub fn connect(
        source: &str,
        settings: &AwsSettings,
        window: RecoveryWindow,
        root: &SecretPath,
        rt: Handle,
    ) -> std::result::Result<AwsStore, StartError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let config = run(
            &rt,
            &Deadline::per_request(),
            settings.timeout,
            loader.load(),
        )
        .map_err(|e| {
            StartError::StoreUnreachable(format!(
                "{source}: cannot load the AWS configuration: {e}"
            ))
        })?;
        let Some(region) = config.region().map(|r| r.to_string()) else {
            return Err(StartError::Options(format!(
                "{source}: no AWS region: give --region REGION (-o region=REGION), or set AWS_REGION or a region in the profile"
            )));
        };
        let endpoint = config
            .endpoint_url()
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        let store = AwsStore {
            client: sm::Client::new(&config),
            rt,
            timeout: settings.timeout,
            plain_key: settings.plain_key.clone(),
            window,
            root: root.clone(),
            region,
            endpoint,
            forms: Mutex::new(HashMap::new()),
            describe_denied: AtomicBool::new(false),
        };
        match store.health(&Deadline::per_request()) {
            Ok(_) => Ok(store),
            Err(e) if e.is_transient() => {
                Err(StartError::StoreUnreachable(format!("{source}: {e}")))
            }
            Err(e) => Err(StartError::Store(format!("{source}: {e}"))),
        }
    }

    /// The region in use.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one request (`what` names it in errors) under the deadline.
    fn request<T, E, F>(
        &self,
        deadline: &Deadline,
        what: &str,
        request: F,
    ) -> std::result::Result<T, Failed>
    where
        F: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        run(&self.rt, deadline, self.timeout, request)?.map_err(|e| failed(what, &e))
    }

    fn forms(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Form)>> {
        self.forms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, name: &str, version: Option<&str>, form: Form) {
        let mut forms = self.forms();
        if forms.len() >= FORMS {
            forms.clear();
        }
        match version {
            Some(v) => forms.insert(name.to_string(), (v.to_string(), form)),
            None => forms.remove(name),
        };
    }

    /// The form of version `version` of `name`: remembered from its read,
    /// else read.
    fn form_of(&self, deadline: &Deadline, name: &str, version: &str) -> Result<Form> {
        if let Some((v, form)) = self.forms().get(name) {
            if v == version {
                return Ok(*form);
            }
        }
        let what = format!("GetSecretValue {name} (version {version})");
        let request = self
            .client
            .get_secret_value()
            .secret_id(name)
            .version_id(version)
            .send();
        match self.request(deadline, &what, request) {
            Ok(out) => Ok(mapping::keys_of(
                out.secret_string(),
                out.secret_binary().map(|b| -> &[u8] { b.as_ref() }),
                &self.plain_key,
            )
            .1),
            // Gone since: the check will fail.
            Err(f) if f.is("ResourceNotFoundException") => Err(Error::CasConflict),
            Err(f) => Err(f.into()),
        }
    }

    /// PutSecretValue of `payload` to `name`, labelled `stage` (AWSCURRENT
    /// when `None`): the new version's id.
    fn put(
        &self,
        deadline: &Deadline,
        name: &str,
        payload: Payload,
        stage: Option<&str>,
    ) -> std::result::Result<String, Failed> {
        let mut request = self.client.put_secret_value().secret_id(name);
        request = match payload {
            Payload::String(s) => request.secret_string(s.as_str()),
            Payload::Binary(b) => request.secret_binary(Blob::new(b.to_vec())),
        };
        if let Some(stage) = stage {
            request = request.version_stages(stage);
        }
        let out = self.request(deadline, &format!("PutSecretValue {name}"), request.send())?;
        out.version_id().map(str::to_string).ok_or_else(|| {
            Failed::from(Error::Protocol(format!(
                "PutSecretValue {name}: no version id in the answer"
            )))
        })
    }

    /// A write of a new secret (CreateSecret: refused when the name is
    /// taken). A secret deleted but still in its recovery window is
    /// restored, then written.
    fn create(
        &self,
        deadline: &Deadline,
        name: &str,
        data: &SecretData,
    ) -> Result<Option<Revision>> {
        let payload = mapping::payload_of(data, Form::Object, &self.plain_key)?;
        let mut request = self.client.create_secret().name(name);
        request = match &payload {
            Payload::String(s) => request.secret_string(s.as_str()),
            Payload::Binary(b) => request.secret_binary(Blob::new(b.to_vec())),
        };
        match self.request(deadline, &format!("CreateSecret {name}"), request.send()) {
            Ok(out) => {
                self.remember(name, out.version_id(), Form::Object);
                Ok(out.version_id().map(Revision::new))
            }
            // Taken: by a live secret (the check fails), or by one
            // scheduled for deletion, whose name stays taken until its
            // recovery window ends (AWS says InvalidRequestException,
            // moto ResourceExistsException).
            Err(f) if f.is("ResourceExistsException") || f.is("InvalidRequestException") => {
                let described = self.request(
                    deadline,
                    &format!("DescribeSecret {name}"),
                    self.client.describe_secret().secret_id(name).send(),
                )?;
                if described.deleted_date().is_none() {
                    return Err(Error::CasConflict);
                }
                tracing::info!(secret = %name, "the secret was deleted and is still recoverable: restoring it to write it");
                self.request(
                    deadline,
                    &format!("RestoreSecret {name}"),
                    self.client.restore_secret().secret_id(name).send(),
                )?;
                drop(payload);
                // Written as any other: checked against the version the
                // restore made current.
                let current = self.request(
                    deadline,
                    &format!("GetSecretValue {name}"),
                    self.client
                        .get_secret_value()
                        .secret_id(name)
                        .version_stage(CURRENT)
                        .send(),
                )?;
                let Some(read) = current.version_id() else {
                    return Err(Error::Protocol(format!(
                        "GetSecretValue {name}: no version id in the answer"
                    )));
                };
                self.write_at(deadline, name, data, read)
            }
            Err(f) => Err(f.into()),
        }
    }

    /// Takes the staging label [`PENDING`] off `version` of `name`, if it
    /// still has it (best effort: another writer's stage may have taken
    /// the label already).
    fn unlabel(&self, deadline: &Deadline, name: &str, version: &str) {
        let request = self
            .client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(PENDING)
            .remove_from_version_id(version)
            .send();
        if let Err(f) = self.request(
            deadline,
            &format!("UpdateSecretVersionStage {name}"),
            request,
        ) {
            tracing::debug!(secret = %name, error = %f.error, "could not take the staging label off a version");
        }
    }

    /// A write checked against version `read`: stage, then move AWSCURRENT
    /// from `read` to it (refused when `read` is no longer current).
    fn write_at(
        &self,
        deadline: &Deadline,
        name: &str,
        data: &SecretData,
        read: &str,
    ) -> Result<Option<Revision>> {
        let form = self.form_of(deadline, name, read)?;
        let payload = mapping::payload_of(data, form, &self.plain_key)?;
        let staged = match self.put(deadline, name, payload, Some(PENDING)) {
            Ok(v) => v,
            Err(f) if f.is("ResourceNotFoundException") => return Err(Error::CasConflict),
            Err(f) => return Err(f.into()),
        };
        let request = self
            .client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(CURRENT)
            .move_to_version_id(&staged)
            .remove_from_version_id(read)
            .send();
        match self.request(
            deadline,
            &format!("UpdateSecretVersionStage {name}"),
            request,
        ) {
            Ok(_) => {
                self.remember(name, Some(&staged), form);
                // The current version carries AWSCURRENT only, as any
                // other writer leaves it (a later PutSecretValue then
                // moves it cleanly; moto keeps AWSCURRENT on a version
                // with two labels).
                self.unlabel(deadline, name, &staged);
                Ok(Some(Revision::new(staged)))
            }
            Err(f)
                if f.is("InvalidParameterException")
                    || f.is("InvalidRequestException")
                    || f.is("ResourceNotFoundException") =>
            {
                tracing::debug!(secret = %name, error = %f.error, "the version read is no longer current: check-and-set lost");
                // Unlabelled, the staged version is deprecated by AWS.
                self.unlabel(deadline, name, &staged);
                Err(Error::CasConflict)
            }
            Err(f) => Err(f.into()),
        }
    }
}

impl SecretStore for AwsStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Checked, with the window docs/AWS-SM.md describes.
            check_and_set: true,
            // Version ids are UUIDs, not numbers: no `P@N`.
            versions: false,
            // Tags are the custom metadata; the version shown is its
            // version id, its time the version's CreatedDate.
            metadata: true,
            // The Description, user.secretfs.description.
            descriptions: true,
            // Both come from DescribeSecret, not with the value: asked
            // only when they are wanted (`read_metadata`).
            metadata_apart: true,
            // A deleted secret is no longer listed (it stays restorable
            // for its recovery window).
            soft_delete: false,
            // `{}` is a secret with no key.
            empty_secrets: true,
        }
    }

    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let prefix = mapping::prefix_of(path);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self.client.list_secrets().max_results(100);
            if !prefix.is_empty() {
                request = request.filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(&prefix)
                        .build(),
                );
            }
            if let Some(t) = token.take() {
                request = request.next_token(t);
            }
            let out = self.request(deadline, &format!("ListSecrets {prefix}"), request.send())?;
            names.extend(
                out.secret_list()
                    .iter()
                    .filter(|s| s.deleted_date().is_none())
                    .filter_map(|s| s.name().map(str::to_string)),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(mapping::listing(path, names.iter().map(String::as_str)))
    }

    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        if path.is_root() {
            return Ok(None);
        }
        let name = mapping::name_of(path);
        // The value only: the tags and description are asked apart
        // (`read_metadata`), when someone wants them.
        let request = self
            .client
            .get_secret_value()
            .secret_id(name)
            .version_stage(CURRENT)
            .send();
        let out = match self.request(deadline, &format!("GetSecretValue {name}"), request) {
            Ok(out) => out,
            // No such secret, or none with a current value, or deleted
            // (InvalidRequestException: scheduled for deletion).
            Err(f) if f.is_gone() => return Ok(None),
            Err(f) => return Err(f.into()),
        };
        let (keys, form) = mapping::keys_of(
            out.secret_string(),
            out.secret_binary().map(|b| -> &[u8] { b.as_ref() }),
            &self.plain_key,
        );
        self.remember(name, out.version_id(), form);
        Ok(Some(Secret {
            keys,
            revision: out.version_id().map(Revision::new),
            modified: out
                .created_date()
                .and_then(|d| SystemTime::try_from(*d).ok()),
            ..Secret::default()
        }))
    }

    /// The tags and the Description: one DescribeSecret. A policy that
    /// lets values be read and not described
    /// (`secretsmanager:GetSecretValue` only) gets none (said once).
    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        if path.is_root() {
            return Ok(None);
        }
        let name = mapping::name_of(path);
        let request = self.client.describe_secret().secret_id(name).send();
        let described = match self.request(deadline, &format!("DescribeSecret {name}"), request) {
            Ok(d) => d,
            Err(f) if f.is_gone() => return Ok(None),
            Err(Failed {
                error: Error::PermissionDenied(why),
                ..
            }) => {
                if !self.describe_denied.swap(true, Ordering::Relaxed) {
                    tracing::warn!(secret = %name, error = %why, "DescribeSecret is denied: tags and descriptions are not shown (user.secretfs.meta.*, user.secretfs.description)");
                }
                return Ok(Some(Metadata::default()));
            }
            Err(f) => return Err(f.into()),
        };
        // Scheduled for deletion: gone, as its value is.
        if described.deleted_date().is_some() {
            return Ok(None);
        }
        Ok(Some(Metadata {
            custom_metadata: described
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
            description: described
                .description()
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        }))
    }

    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        if path.is_root() {
            return Err(Error::Invalid(
                "a secret needs a name below the root".into(),
            ));
        }
        let name = mapping::name_of(path);
        match when {
            Precondition::Absent => self.create(deadline, name, data),
            Precondition::At(read) => self.write_at(deadline, name, data, read.as_str()),
            Precondition::Any => {
                let form = self.forms().get(name).map_or(Form::Object, |(_, f)| *f);
                let payload = mapping::payload_of(data, form, &self.plain_key)?;
                match self.put(deadline, name, payload, None) {
                    Ok(version) => {
                        self.remember(name, Some(&version), form);
                        Ok(Some(Revision::new(version)))
                    }
                    Err(f) if f.is("ResourceNotFoundException") => {
                        self.create(deadline, name, data)
                    }
                    Err(f) => Err(f.into()),
                }
            }
        }
    }

    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        let name = mapping::name_of(path);
        // Never ForceDeleteWithoutRecovery: restorable for the recovery
        // window (--recovery-window, 30 days unless given) with `aws
        // secretsmanager restore-secret`.
        let request = self
            .client
            .delete_secret()
            .secret_id(name)
            .recovery_window_in_days(self.window.in_days())
            .send();
        let out = self.request(deadline, &format!("DeleteSecret {name}"), request);
        self.remember(name, None, Form::Object);
        match out {
            Ok(_) => Ok(()),
            // Gone, or scheduled for deletion already.
            Err(f) if f.is_gone() => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    /// A tag set (TagResource) or removed (UntagResource), the others
    /// kept. Refused before asking when AWS would refuse it (see
    /// `mapping::check_tag`); a new tag past the 50 a secret takes is
    /// refused after DescribeSecret counts them.
    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        mapping::check_tag(name, value)?;
        let secret = mapping::name_of(path);
        let gone = |f: Failed| {
            if f.is_gone() {
                Error::NotFound
            } else {
                f.error
            }
        };
        let Some(value) = value else {
            let request = self
                .client
                .untag_resource()
                .secret_id(secret)
                .tag_keys(name)
                .send();
            self.request(
                deadline,
                &format!("UntagResource {secret} ({name})"),
                request,
            )
            .map_err(gone)?;
            return Ok(());
        };
        let described = self
            .request(
                deadline,
                &format!("DescribeSecret {secret}"),
                self.client.describe_secret().secret_id(secret).send(),
            )
            .map_err(gone)?;
        mapping::check_tag_count(name, described.tags().iter().filter_map(|t| t.key()))?;
        let request = self
            .client
            .tag_resource()
            .secret_id(secret)
            .tags(Tag::builder().key(name).value(value).build())
            .send();
        self.request(deadline, &format!("TagResource {secret} ({name})"), request)
            .map_err(gone)?;
        Ok(())
    }

    /// UpdateSecret with a Description only (no new version); removed,
    /// the description is made empty, which reads as none.
    fn set_description(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        let value = value.unwrap_or("");
        mapping::check_description(value)?;
        let secret = mapping::name_of(path);
        let request = self
            .client
            .update_secret()
            .secret_id(secret)
            .description(value)
            .send();
        match self.request(
            deadline,
            &format!("UpdateSecret {secret} (description)"),
            request,
        ) {
            Ok(_) => Ok(()),
            Err(f) if f.is("ResourceNotFoundException") => Err(Error::NotFound),
            Err(f) => Err(f.into()),
        }
    }

    fn health(&self, deadline: &Deadline) -> Result<Health> {
        let mut request = self.client.list_secrets().max_results(1);
        if !self.root.is_root() {
            request = request.filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(self.root.as_str())
                    .build(),
            );
        }
        self.request(deadline, "ListSecrets", request.send())?;
        Ok(Health::default())
    }

    fn permissions(&self, _deadline: &Deadline, _path: &SecretPath) -> Result<Option<Permissions>> {
        // AWS has no question for it (IAM policy simulation needs another
        // permission): changes are tried, and a refusal fails the close.
        Ok(None)
    }

    fn node(&self) -> Option<String> {
        Some(self.endpoint.clone())
    }
}
