//! Memory use of the reader is bounded by its input: a counting global allocator measures the
//! peak heap growth while hostile headers are parsed. (One test in this binary, so nothing
//! else allocates concurrently.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use qforge::gguf::{ErrorKind, GgufHeader};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap growth (bytes) while parsing `buf`, and the result's error kind.
fn peak_parse(buf: &[u8]) -> (usize, Option<ErrorKind>) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = GgufHeader::parse(buf).map(drop).map_err(|e| e.kind);
    (PEAK.load(Relaxed) - base, r.err())
}

fn header(n_tensors: u64, n_kv: u64, body: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.resize(b.len() + body, 0);
    b
}

#[test]
fn allocation_is_bounded_by_the_input() {
    const MIB: usize = 1 << 20;
    let n = 4 * MIB;

    // the largest tensor count 4 MiB could hold, then zeros: nothing is reserved for it
    let buf = header((n / 25) as u64, 0, n);
    let (peak, e) = peak_parse(&buf);
    assert_eq!(e, Some(ErrorKind::EmptyTensorName));
    assert!(
        peak < MIB / 2,
        "peak {peak} bytes for a 4 MiB hostile header"
    );

    // the largest KV count, then zeros: the first key is empty
    let buf = header(0, (n / 14) as u64, n);
    let (peak, e) = peak_parse(&buf);
    assert_eq!(e, Some(ErrorKind::EmptyKey));
    assert!(peak < 64 * 1024, "peak {peak}");

    // an array claiming more u64s than the file holds is refused before any allocation
    let mut buf = header(0, 1, 0);
    buf.extend_from_slice(&1u64.to_le_bytes());
    buf.push(b'k');
    buf.extend_from_slice(&9u32.to_le_bytes());
    buf.extend_from_slice(&10u32.to_le_bytes());
    buf.extend_from_slice(&((n / 8 + 1) as u64).to_le_bytes());
    buf.resize(buf.len() + n, 0);
    let (peak, e) = peak_parse(&buf);
    assert!(matches!(e, Some(ErrorKind::Truncated { .. })), "{e:?}");
    assert!(peak < 64 * 1024, "peak {peak}");

    // a valid array of n/8 empty strings: one String (24 bytes) per 8 input bytes, plus the
    // growth of the vector; a constant factor of the input, never more
    let mut buf = header(0, 1, 0);
    buf.extend_from_slice(&1u64.to_le_bytes());
    buf.push(b'k');
    buf.extend_from_slice(&9u32.to_le_bytes());
    buf.extend_from_slice(&8u32.to_le_bytes());
    buf.extend_from_slice(&((n / 8) as u64).to_le_bytes());
    buf.resize(buf.len() + n, 0);
    let (peak, e) = peak_parse(&buf);
    assert_eq!(e, None);
    assert!(peak <= 6 * n + MIB, "peak {peak} for {n} input bytes");
    assert!(peak >= 3 * n, "the strings are really held: peak {peak}");
}
