//! `--addr`, `--auth` and the other Vault connection flags, converted into
//! the store's [`VaultSettings`].

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::cli::{AuthMethod, VaultArgs};
use crate::start_error::StartError;
use crate::store::vault::auth::Login;
use crate::store::vault::VaultSettings;

/// The settings the command line (or environment) gives.
pub fn vault_settings(args: &VaultArgs) -> Result<VaultSettings, StartError> {
    let addrs: Vec<String> = args
        .addr
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    Ok(VaultSettings {
        addrs: if addrs.is_empty() {
            vec![String::new()]
        } else {
            addrs
        },
        login: login_from(args).map_err(StartError::Options)?,
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone().zip(args.client_key.clone()),
        skip_verify: args.tls_skip_verify,
        namespace: args.namespace.clone(),
        timeout: args.timeout,
    })
}

/// How to get the token: --token-file when given, else as the vault/bao
/// CLIs find it (VAULT_TOKEN, else ~/.vault-token), or by a login
/// (AppRole, TLS certificate, Kubernetes).
fn login_from(args: &VaultArgs) -> Result<Login, String> {
    // Where the auth method is mounted: --auth-mount, else its usual path.
    let auth_mount = |usual: &str| {
        let given = args.auth_mount.as_deref().unwrap_or(usual);
        given.trim_matches('/').to_string()
    };
    match args.auth {
        AuthMethod::Approle => {
            let role_id_file = args
                .role_id_file
                .clone()
                .ok_or("--auth approle needs --role-id-file")?;
            return Ok(Login::AppRole {
                mount: auth_mount("approle"),
                role_id_file,
                secret_id_file: args.secret_id_file.clone(),
            });
        }
        AuthMethod::Cert => {
            if args.client_cert.is_none() {
                return Err("--auth cert needs --client-cert and --client-key".into());
            }
            return Ok(Login::Cert {
                mount: auth_mount("cert"),
                role: args.role.clone(),
            });
        }
        AuthMethod::Kubernetes => {
            let role = args
                .role
                .clone()
                .ok_or("--auth kubernetes needs --role (the Vault role to log in as)")?;
            return Ok(Login::Kubernetes {
                mount: auth_mount("kubernetes"),
                role,
                jwt_file: args.jwt_file.clone(),
            });
        }
        AuthMethod::Token => {}
    }
    if args.role_id_file.is_some() || args.secret_id_file.is_some() {
        return Err("--role-id-file and --secret-id-file need --auth approle".into());
    }
    if args.role.is_some() {
        return Err("--role needs --auth kubernetes or --auth cert".into());
    }
    let env_token = std::env::var("VAULT_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    // An option given on the command line wins over the environment (as
    // --addr over VAULT_ADDR): a narrow token named on purpose must not
    // give way to whatever token the shell or the unit exports.
    if let Some(path) = &args.token_file {
        if env_token.is_some() {
            tracing::warn!(
                token_file = %path.display(),
                "VAULT_TOKEN is set but not used: --token-file wins over it"
            );
        }
        return Ok(Login::TokenFile(path.clone()));
    }
    if let Some(t) = env_token {
        return Ok(Login::Token(SecretString::from(t.trim().to_string())));
    }
    let path: PathBuf = match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".vault-token"),
        None => return Err("no token: set VAULT_TOKEN or pass --token-file".into()),
    };
    if !path.exists() {
        return Err(
            "no token: set VAULT_TOKEN, pass --token-file, use --auth approle, or log in with `vault login`/`bao login`"
                .into(),
        );
    }
    Ok(Login::TokenFile(path))
}
