//! Releasing start-up code and constants: in a test binary of its own, so no other test runs
//! meanwhile.
#![cfg(all(target_os = "linux", target_pointer_width = "64"))]

use std::io::{Read, Seek, SeekFrom};

use nanoclaw::footprint::release_idle_memory;

/// Read-only data larger than the kernel's fault-around window (64 KiB): a page in its
/// middle is mapped only when this test reads it, never by code running nearby.
static CONSTANTS: [u8; 512 * 1024] = [7; 512 * 1024];

#[inline(never)]
fn marker(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Whether the page at `addr` is mapped in this process (bit 63 of its pagemap entry).
fn mapped(addr: usize) -> bool {
    let page = 4096;
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
    pagemap
        .seek(SeekFrom::Start((addr / page * 8) as u64))
        .expect("seek");
    let mut entry = [0u8; 8];
    pagemap.read_exact(&mut entry).expect("read");
    u64::from_le_bytes(entry) >> 63 == 1
}

#[test]
fn code_pages_are_released_and_code_keeps_running() {
    let middle = &CONSTANTS[CONSTANTS.len() / 2];
    // SAFETY: reading a byte of a static.
    assert_eq!(unsafe { std::ptr::read_volatile(middle) }, 7);
    let addr = middle as *const u8 as usize;
    assert!(mapped(addr), "reading the constant maps its page");

    release_idle_memory();
    assert!(!mapped(addr), "the read-only page is no longer mapped");
    // SAFETY: as above; the page comes back from the file.
    assert_eq!(unsafe { std::ptr::read_volatile(middle) }, 7);

    // Code, constants and relocated data (vtables, formatting) all still work.
    assert_eq!(
        std::hint::black_box(marker)(1),
        0x9E37_79B9_7F4A_7C15u64.rotate_left(17)
    );
    let v: Vec<u64> = (0..1000).map(|i| i * i).collect();
    assert_eq!(
        format!("{:?} {}", &v[..3], v.iter().sum::<u64>()),
        "[0, 1, 4] 332833500"
    );
    release_idle_memory();
    assert_eq!(format!("{:?}", &v[997..]), "[994009, 996004, 998001]");
}
