//! Model ids (`Qwen/Qwen3-0.6B`) resolved in the local Hugging Face cache, the layout
//! `huggingface-cli download` writes: `models--{owner}--{name}/refs/{revision}` holding a
//! commit hash, `snapshots/{commit}/` holding the files (usually symlinks into `blobs/`).
//! Never the network.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::SourceError;

/// The cache folders searched, in order: `$HF_HUB_CACHE`, `$HF_HOME/hub`,
/// `~/.cache/huggingface/hub`.
pub fn cache_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        roots.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        roots.push(PathBuf::from(p).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        roots.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    roots
}

/// True for text shaped like a model id: `owner/name`, one slash, no path syntax.
pub fn looks_like_model_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(owner) && ok(name)
}

/// What a snapshot needs to be converted: config.json and every safetensors file, each
/// readable (a symlink into `blobs/` whose download did not finish dangles).
fn snapshot_is_complete(dir: &Path) -> bool {
    let readable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    if !readable(&dir.join("config.json")) {
        return false;
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let Ok(text) = std::fs::read_to_string(&index) else {
            return false;
        };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        let Some(map) = doc.get("weight_map").and_then(|m| m.as_object()) else {
            return false;
        };
        return !map.is_empty()
            && map
                .values()
                .filter_map(|f| f.as_str())
                .all(|f| readable(&dir.join(f)));
    }
    readable(&dir.join("model.safetensors"))
}

/// Resolve `model_id` to a snapshot folder: the one `refs/main` names when it is complete,
/// else the most recently modified complete snapshot. The error says where it looked and how
/// to download the model.
pub fn resolve_model_id(model_id: &str, roots: &[PathBuf]) -> Result<PathBuf, SourceError> {
    let folder = format!("models--{}", model_id.replace('/', "--"));
    let mut looked = Vec::new();
    let mut incomplete = Vec::new();
    for root in roots {
        let repo = root.join(&folder);
        looked.push(repo.display().to_string());
        let snapshots = repo.join("snapshots");
        if let Ok(commit) = std::fs::read_to_string(repo.join("refs/main")) {
            let dir = snapshots.join(commit.trim());
            if !commit.trim().is_empty() && snapshot_is_complete(&dir) {
                return Ok(dir);
            }
        }
        let Ok(entries) = std::fs::read_dir(&snapshots) else {
            continue;
        };
        let mut best: Option<(SystemTime, PathBuf)> = None;
        for e in entries.flatten() {
            let dir = e.path();
            if !dir.is_dir() {
                continue;
            }
            if !snapshot_is_complete(&dir) {
                incomplete.push(dir.display().to_string());
                continue;
            }
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, dir));
            }
        }
        if let Some((_, dir)) = best {
            return Ok(dir);
        }
    }
    let mut msg = format!(
        "model '{model_id}' is not a folder or file here, and no complete snapshot of it is in \
         the local Hugging Face cache (looked in {})",
        if looked.is_empty() {
            "no cache folder: HF_HUB_CACHE, HF_HOME and HOME are unset".to_string()
        } else {
            looked.join(", ")
        }
    );
    if !incomplete.is_empty() {
        msg.push_str(&format!(
            "; incomplete snapshots (config.json or a safetensors file missing): {}",
            incomplete.join(", ")
        ));
    }
    msg.push_str(&format!(
        ". Download it first, e.g. `huggingface-cli download {model_id}`; qforge never uses the network"
    ));
    Err(SourceError::Checkpoint {
        path: PathBuf::from(model_id),
        msg,
    })
}

/// The model name of a snapshot folder (`.../models--Qwen--Qwen3-0.6B/snapshots/abc` →
/// `Qwen3-0.6B`), or `None` when the path is not in a cache.
pub fn model_name_of_snapshot(dir: &Path) -> Option<String> {
    let snapshots = dir.parent()?;
    if snapshots.file_name()? != "snapshots" {
        return None;
    }
    let repo = snapshots.parent()?.file_name()?.to_str()?;
    let rest = repo.strip_prefix("models--")?;
    rest.rsplit("--").next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_told_from_paths() {
        assert!(looks_like_model_id("Qwen/Qwen3-0.6B"));
        assert!(looks_like_model_id("meta-llama/Llama-3.2-1B"));
        for p in [
            "./x/y", "/abs/x", "x", "a/b/c", "../x", "a/", "x/..", "a b/c",
        ] {
            assert!(!looks_like_model_id(p), "{p}");
        }
    }

    #[test]
    fn snapshot_names() {
        let p = Path::new("/c/models--Qwen--Qwen3-0.6B/snapshots/abc");
        assert_eq!(model_name_of_snapshot(p).as_deref(), Some("Qwen3-0.6B"));
        assert_eq!(model_name_of_snapshot(Path::new("/x/y")), None);
    }
}
