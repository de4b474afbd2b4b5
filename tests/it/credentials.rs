//! Credentials against the simulator's token endpoints: client secret, workload identity, managed
//! identity (App Service and IMDS forms), the Azure CLI, and chains of them.

use crate::common::*;
use costlake::auth::*;
use costlake::secret::Secret;
use std::sync::Arc;

const SCOPE: &str = "https://management.azure.com/.default";

fn http() -> reqwest::Client {
    costlake::azure::http_client(std::time::Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn client_secret_and_refusals() {
    let (sim, _) = start(config()).await;
    let auth = url::Url::parse(&sim.arm_url()).unwrap();
    let cfg = sim.config();
    let ok = ClientSecretCredential::new(
        http(),
        auth.clone(),
        sim.world().tenant.clone(),
        cfg.client_id.clone(),
        Secret::new(cfg.client_secret.clone()),
    );
    let t = ok.get_token(SCOPE).await.unwrap();
    assert!(t.expires_at > chrono::Utc::now() + chrono::Duration::minutes(50));
    let bad = ClientSecretCredential::new(
        http(),
        auth.clone(),
        sim.world().tenant.clone(),
        cfg.client_id.clone(),
        Secret::new("wrong-secret-value"),
    );
    let e = bad.get_token(SCOPE).await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        text.contains("invalid_client") && text.contains("401"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-value"));
    let tenant = ClientSecretCredential::new(
        http(),
        auth,
        "not-the-tenant".into(),
        cfg.client_id.clone(),
        Secret::new(cfg.client_secret.clone()),
    );
    assert!(
        tenant
            .get_token(SCOPE)
            .await
            .unwrap_err()
            .to_string()
            .contains("AADSTS90002")
    );
}

#[tokio::test]
async fn workload_and_managed_identity() {
    let (sim, _) = start(config()).await;
    let auth = url::Url::parse(&sim.arm_url()).unwrap();
    let cfg = sim.config();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &cfg.federated_assertion).unwrap();
    let wi = WorkloadIdentityCredential::new(
        http(),
        auth.clone(),
        sim.world().tenant.clone(),
        cfg.client_id.clone(),
        file,
    );
    wi.get_token(SCOPE).await.unwrap();
    let app = ManagedIdentityCredential::app_service(
        http(),
        auth.join("msi/token").unwrap(),
        Secret::new(cfg.identity_header.clone()),
        None,
    );
    let t = app.get_token(SCOPE).await.unwrap();
    assert!(t.expires_at > chrono::Utc::now());
    let imds = ManagedIdentityCredential::imds(http(), auth.clone(), None);
    imds.get_token(SCOPE).await.unwrap();
    let wrong = ManagedIdentityCredential::app_service(
        http(),
        auth.join("msi/token").unwrap(),
        Secret::new("nope"),
        None,
    );
    assert!(wrong.get_token(SCOPE).await.is_err());
}

#[tokio::test]
async fn azure_cli_and_chain() {
    let (sim, _) = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let az = dir.path().join("az");
    std::fs::write(&az, "#!/bin/sh\necho '{\"accessToken\": \"cli-token-value\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": 4070908800}'\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&az).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cli = AzureCliCredential::with_program(az.to_string_lossy());
    let t = cli.get_token(SCOPE).await.unwrap();
    assert_eq!(t.token.expose(), "cli-token-value");
    assert_eq!(t.expires_at.timestamp(), 4070908800);
    let missing = AzureCliCredential::with_program(dir.path().join("no-az").to_string_lossy());
    // The chain skips what fails and remembers what worked; its error lists every attempt.
    let cfg = sim.config();
    let auth = url::Url::parse(&sim.arm_url()).unwrap();
    let good = ClientSecretCredential::new(
        http(),
        auth,
        sim.world().tenant.clone(),
        cfg.client_id.clone(),
        Secret::new(cfg.client_secret.clone()),
    );
    let chain = ChainedCredential::new(vec![
        Box::new(AzureCliCredential::with_program(
            dir.path().join("no-az").to_string_lossy(),
        )),
        Box::new(good),
    ]);
    chain.get_token(SCOPE).await.unwrap();
    let none = ChainedCredential::new(vec![
        Box::new(missing),
        Box::new(AzureCliCredential::with_program("/nonexistent/az")),
    ]);
    let e = none.get_token(SCOPE).await.unwrap_err().to_string();
    assert!(
        e.contains("no credential worked") && e.matches("azure cli").count() == 2,
        "{e}"
    );
    // The cache hands out one token until it is invalidated (what a 401 does).
    let cache = TokenCache::new(
        Arc::new(AzureCliCredential::with_program(az.to_string_lossy())),
        SCOPE,
    );
    let a = cache.token().await.unwrap();
    assert_eq!(cache.token().await.unwrap(), a);
    cache.invalidate(&a).await;
    assert_eq!(cache.token().await.unwrap().expose(), "cli-token-value");
}
