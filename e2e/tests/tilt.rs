//! The local development loop, checked rather than hoped: the Tiltfile runs in a real Starlark
//! interpreter with Tilt's functions recorded (e2e/tools/tiltcheck, go.starlark.net), its
//! `helm()` calls render with the real Helm, and what it deploys is checked against the
//! rendered YAML and the Dockerfile; kind.yaml loads into kind's own config types. Each kind
//! of mistake is then made in a copy, and the check must name it.

use std::path::Path;
use std::process::Command;

use kotel_e2e::*;

/// Runs tiltcheck on `dir`'s Tiltfile and kind.yaml: Ok(summary) or Err(the problems).
fn tiltcheck(dir: &Path) -> anyhow::Result<Result<String, String>> {
    let helm = std::env::var("KOTEL_HELM")
        .map(std::path::PathBuf::from)
        .or_else(|_| built_tool("helm"))?;
    let out = Command::new(built_tool("tiltcheck")?)
        .arg("-tiltfile")
        .arg(dir.join("Tiltfile"))
        .arg("-kind")
        .arg(dir.join("kind.yaml"))
        .arg("-helm")
        .arg(helm)
        .output()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    })
}

/// A copy of what the Tiltfile reads, in a directory that is removed when dropped.
struct Copy(std::path::PathBuf);

impl Copy {
    fn new() -> anyhow::Result<Copy> {
        let dir = tempdir("kotel-tilt")?;
        let root = repo_root();
        let status = Command::new("cp")
            .arg("-r")
            .args(
                ["Tiltfile", "kind.yaml", "Dockerfile", "charts", "examples"].map(|p| root.join(p)),
            )
            .arg(&dir)
            .status()?;
        anyhow::ensure!(status.success(), "copying the repository's files");
        Ok(Copy(dir))
    }

    /// Replaces `from` by `to` in `file` (which must contain it).
    fn edit(&self, file: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let path = self.0.join(file);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains(from), "{file} no longer contains {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1))?;
        Ok(())
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_tiltfile_and_kind_yaml_run_and_match_the_charts_and_the_dockerfile() -> anyhow::Result<()> {
    let summary = tiltcheck(&repo_root())?.map_err(anyhow::Error::msg)?;
    assert!(summary.contains("2 docker_build"), "{summary}");
    assert!(summary.contains("kind cluster \"kotel\""), "{summary}");
    Ok(())
}

#[test]
fn each_kind_of_mistake_is_found_and_named() -> anyhow::Result<()> {
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "Tiltfile",
            "port_forwards=['8000:8000']",
            "port_forwards=['8000:9000']",
            "listens on 9000",
        ),
        (
            "Tiltfile",
            "'gateway:collector'",
            "'gateway:instrumentation'",
            "gateway:instrumentation",
        ),
        (
            "Tiltfile",
            "target='operator'",
            "target='operators'",
            "no stage \"operators\"",
        ),
        (
            "Tiltfile",
            "resource_deps=['operator']",
            "resource_deps=['operator', 'house-price']",
            "cycle",
        ),
        (
            "Tiltfile",
            "helm('charts/inference-app'",
            "helm('charts/no-such-chart'",
            "does not render",
        ),
        (
            "charts/inference-app/values.yaml",
            "repository: kotel/inference-app",
            "repository: kotel/app",
            "no docker_build builds",
        ),
        (
            "kind.yaml",
            "  - role: control-plane",
            "  - role: control-plane\n    rol: worker",
            "unknown field",
        ),
    ];
    for (file, from, to, named) in cases {
        let copy = Copy::new()?;
        copy.edit(file, from, to)?;
        match tiltcheck(&copy.0)? {
            Ok(summary) => panic!("{file}: {to:?} passed: {summary}"),
            Err(problems) => assert!(problems.contains(named), "{file}: {to:?}: {problems}"),
        }
    }
    Ok(())
}
