//! The images `e2e/images.sh` packs without Docker are the Dockerfile's stages: the same
//! entrypoint, cmd, user and exposed ports, and every path the stage copies in is there.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kotel_e2e::repo_root;
use serde_json::Value;

/// What a final stage of the Dockerfile declares.
#[derive(Debug, Default)]
struct Stage {
    entrypoint: Option<Value>,
    cmd: Option<Value>,
    user: Option<String>,
    exposed: BTreeSet<String>,
    copied: Vec<String>,
}

fn stages(dockerfile: &str) -> BTreeMap<String, Stage> {
    let mut out: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in dockerfile.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        if word == "FROM" {
            current = rest.split_once(" AS ").map(|(_, n)| n.trim().to_string());
            if let Some(n) = &current {
                out.entry(n.clone()).or_default();
            }
            continue;
        }
        let Some(stage) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        match word {
            "ENTRYPOINT" => stage.entrypoint = serde_json::from_str(rest).ok(),
            "CMD" => stage.cmd = serde_json::from_str(rest).ok(),
            "USER" => stage.user = Some(rest.to_string()),
            "EXPOSE" => stage
                .exposed
                .extend(rest.split_whitespace().map(|p| format!("{p}/tcp"))),
            "COPY" => stage
                .copied
                .extend(rest.split_whitespace().last().map(str::to_string)),
            _ => {}
        }
    }
    out
}

fn layout() -> PathBuf {
    std::env::var_os("KOTEL_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/kotel-e2e"))
        .join("images/oci")
}

fn blob(layout: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let hex = digest.strip_prefix("sha256:").context("a sha256 digest")?;
    Ok(std::fs::read(layout.join("blobs/sha256").join(hex))?)
}

/// An image's config and the paths in its layers.
fn image(layout: &Path, name: &str) -> anyhow::Result<(Value, BTreeSet<String>)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).with_context(|| {
            format!(
                "{} has no images: run e2e/images.sh build",
                layout.display()
            )
        })?)?;
    let desc = index["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .with_context(|| format!("no image {name} in {}", layout.display()))?;
    let manifest: Value = serde_json::from_slice(&blob(layout, desc["digest"].as_str().unwrap())?)?;
    let config: Value = serde_json::from_slice(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    )?)?;
    let mut paths = BTreeSet::new();
    for layer in manifest["layers"].as_array().context("layers")? {
        let gz = blob(layout, layer["digest"].as_str().unwrap())?;
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes)?;
        for entry in tar::Archive::new(&tar_bytes[..]).entries()? {
            let path = entry?
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            paths.insert(format!("/{}", path.trim_end_matches('/')));
        }
    }
    Ok((config["config"].clone(), paths))
}

#[test]
fn the_images_are_the_dockerfiles_stages() -> anyhow::Result<()> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    let stages = stages(&dockerfile);
    let layout = layout();
    for name in ["operator", "inference-app"] {
        let want = stages
            .get(name)
            .with_context(|| format!("the Dockerfile has no stage {name}"))?;
        let (config, paths) = image(&layout, name)?;
        assert_eq!(
            Some(&config["Entrypoint"]),
            want.entrypoint.as_ref(),
            "{name}: entrypoint"
        );
        assert_eq!(
            config.get("Cmd").filter(|c| !c.is_null()),
            want.cmd.as_ref(),
            "{name}: cmd"
        );
        assert_eq!(
            config["User"].as_str(),
            want.user.as_deref(),
            "{name}: user"
        );
        let exposed: BTreeSet<String> = config["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(exposed, want.exposed, "{name}: exposed ports");
        assert!(!want.copied.is_empty(), "{name}: the stage copies nothing?");
        for path in &want.copied {
            assert!(
                paths.contains(path.trim_end_matches('/')),
                "{name}: {path} is not in the image"
            );
        }
        // The base is distroless-like: libc, CA certificates, the nonroot user.
        for path in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/passwd",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ] {
            assert!(paths.contains(path), "{name}: {path} is not in the image");
        }
    }
    Ok(())
}

#[test]
fn the_dockerfile_reader_sees_each_stage() {
    let s = stages(
        "FROM rust AS build\nRUN x\nFROM base AS app\nCOPY --from=build /a /usr/bin/a\nUSER 1:1\nEXPOSE 80 90\nENTRYPOINT [\"/usr/bin/a\"]\nCMD [\"run\"]\n",
    );
    let app = &s["app"];
    assert_eq!(app.entrypoint, Some(serde_json::json!(["/usr/bin/a"])));
    assert_eq!(app.cmd, Some(serde_json::json!(["run"])));
    assert_eq!(app.user.as_deref(), Some("1:1"));
    assert_eq!(
        app.exposed,
        BTreeSet::from(["80/tcp".to_string(), "90/tcp".to_string()])
    );
    assert_eq!(app.copied, ["/usr/bin/a"]);
    assert!(s["build"].copied.is_empty());
}
