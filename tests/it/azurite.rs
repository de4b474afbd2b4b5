//! The demo pipeline writes its lake to Azurite through `az://`, and reading it back gives the
//! same bytes as the same pipeline writing to local disk. Azurite is a real process (npm `azurite`),
//! installed by `.ci/test`.

use crate::pipeline::{toml, walk};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use object_store::ObjectStoreExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azurite() -> Option<String> {
    let local = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.ci/node_modules/.bin/azurite-blob"
    );
    let found = std::env::var("COSTLAKE_AZURITE_BIN").ok().or_else(|| {
        std::path::Path::new(local)
            .exists()
            .then(|| local.to_owned())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Azurite: run `bash .ci/test`"
        );
        eprintln!("SKIPPED: Azurite is not installed; `bash .ci/test` installs it");
    }
    found
}

/// `PUT /{account}/{container}?restype=container`, SharedKey-signed (object_store never creates containers).
fn create_container(port: u16, name: &str) {
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{port}/{ACCOUNT}/{name}?restype=container"
            ))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("content-length", "0")
            .header("authorization", format!("SharedKey {ACCOUNT}:{sig}"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(
        status.is_success() || status.as_u16() == 409,
        "create container: {status}"
    );
}

#[test]
fn demo_pipeline_writes_to_azurite_and_reads_back_identical_data() {
    let Some(bin) = azurite() else { return };
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
        ])
        .arg(data.path())
        .args(["--skipApiVersionCheck", "--loose", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Azurite did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    create_container(port, "lake");

    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("p.toml");
    std::fs::write(&f, toml(local.path(), "", "usage-details")).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let g = remote.path().join("p.toml");
    let text = toml(remote.path(), "", "usage-details").replace(
        &format!("\"{}\"", remote.path().join("lake").display()),
        "\"az://lake/demo\"",
    );
    std::fs::write(&g, text).unwrap();
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_owned()),
        (
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{port}"),
        ),
        ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_owned()),
    ];
    for (file, envs) in [(&f, &[][..]), (&g, &env[..])] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_costlake"));
        c.arg("run").arg(file).stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Read back through object_store, signed as Azurite expects, and compare with the local lake.
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(ACCOUNT)
        .with_access_key(KEY)
        .with_container_name("lake")
        .with_endpoint(format!("http://127.0.0.1:{port}/{ACCOUNT}"))
        .with_allow_http(true)
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lake = local.path().join("lake");
    let mut compared = 0;
    rt.block_on(async {
        for file in walk(&lake)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        {
            let rel = file
                .strip_prefix(&lake)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let path = object_store::path::Path::parse(format!("demo/{rel}")).unwrap();
            let got = store
                .get(&path)
                .await
                .unwrap_or_else(|e| panic!("{rel} in Azurite: {e}"))
                .bytes()
                .await
                .unwrap();
            assert_eq!(
                got.as_ref(),
                std::fs::read(&file).unwrap().as_slice(),
                "{rel}"
            );
            compared += 1;
        }
    });
    assert!(compared > 20, "{compared} files compared");
    eprintln!("Azurite: {compared} Parquet files read back byte-identical to the local run");
    let _ = server.kill();
    let _ = server.wait();
}
