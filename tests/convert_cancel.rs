//! Cancelling a conversion (a progress callback returning false, or the cancel flag) stops it
//! with `ConvertError::Cancelled` and leaves nothing in the output folder; the callback sees
//! every byte of a run that is not cancelled.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use qforge::convert::{self, ConvertError, Input, RunOptions};

const MODEL: &str = "fixtures/tiny-llama-spm";

fn folder_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn small_chunks() -> RunOptions {
    RunOptions {
        threads: 2,
        chunk_elements: 256, // many chunks, so a cancel lands mid-file
        ..RunOptions::default()
    }
}

#[test]
fn callback_returning_false_cancels_and_leaves_nothing() {
    let input = Input::open(Path::new(MODEL)).unwrap();
    let plan = convert::plan(&input, Path::new(MODEL), Some("q8_0".parse().unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let mut opts = small_chunks();
    opts.on_progress = Some(Arc::new(move |done, total| {
        assert!(done <= total);
        seen.fetch_add(1, Ordering::Relaxed) < 3
    }));
    let err = convert::execute(&plan, &input, &out, &opts).unwrap_err();
    assert!(matches!(err, ConvertError::Cancelled), "{err}");
    assert_eq!(calls.load(Ordering::Relaxed), 4, "stops at the first false");
    assert!(
        folder_entries(dir.path()).is_empty(),
        "{:?}",
        folder_entries(dir.path())
    );
}

#[test]
fn cancel_flag_set_before_the_run_writes_nothing() {
    let input = Input::open(Path::new(MODEL)).unwrap();
    let plan = convert::plan(&input, Path::new(MODEL), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let mut opts = small_chunks();
    opts.cancel = Some(Arc::new(AtomicBool::new(true)));
    let err = convert::execute(&plan, &input, &out, &opts).unwrap_err();
    assert!(matches!(err, ConvertError::Cancelled), "{err}");
    assert!(folder_entries(dir.path()).is_empty());
}

#[test]
fn callback_sees_every_byte_of_a_finished_run() {
    let input = Input::open(Path::new(MODEL)).unwrap();
    let plan = convert::plan(&input, Path::new(MODEL), Some("q4_0".parse().unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let last = Arc::new(AtomicU64::new(0));
    let seen = last.clone();
    let mut opts = small_chunks();
    opts.on_progress = Some(Arc::new(move |done, total| {
        assert!(done >= seen.load(Ordering::Relaxed) && done <= total);
        seen.store(done, Ordering::Relaxed);
        true
    }));
    convert::execute(&plan, &input, &out, &opts).unwrap();
    assert_eq!(last.load(Ordering::Relaxed), plan.data_bytes());
    assert_eq!(folder_entries(dir.path()), ["out.gguf"]);
}

#[test]
fn a_panicking_callback_propagates_instead_of_hanging_and_leaves_nothing() {
    let input = Input::open(Path::new(MODEL)).unwrap();
    let plan = convert::plan(&input, Path::new(MODEL), Some("q8_0".parse().unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let mut opts = small_chunks();
    opts.on_progress = Some(Arc::new(|done, _| {
        assert!(done < 1, "callback failure");
        true
    }));
    // a regression here hangs (workers waiting for window slots): fail loudly instead
    let finished = Arc::new(AtomicBool::new(false));
    let watched = finished.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !watched.load(Ordering::Relaxed) {
            eprintln!("the conversion hung after its progress callback panicked");
            std::process::abort();
        }
    });
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        convert::execute(&plan, &input, &out, &opts)
    }));
    finished.store(true, Ordering::Relaxed);
    assert!(run.is_err(), "the callback's panic reaches the caller");
    assert!(folder_entries(dir.path()).is_empty());
}
