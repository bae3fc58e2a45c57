//! How freed memory goes back to the system, by phase (mimalloc's purge delay).
//!
//! A nightly run's merge and count are held to a memory budget (256 MiB at ten million cases):
//! while such a merge runs, memory freed goes back at once (`motcua`'s default). Counting frees
//! and reallocates a row group's columns a few milliseconds apart: given back at once, a third
//! of a cold count's CPU went to the kernel faulting them in again. So while counting, freed
//! pages are kept until the count ends ([`keep_freed_while_counting`]): what a count holds
//! live is a row group per thread, so what it keeps free does not grow with the province (at
//! ten million cases it peaked at 131–149 MiB, against 99–104 MiB with pages kept 20 ms, and
//! took 10 % less time). Reading records — a pull
//! or a replay's read of raw — frees and reallocates the same buffers page after page: giving
//! every freed page back and faulting it in again cost a replay of two million records 77 GiB
//! of purges and a third of its CPU in the kernel. So while records are read, freed pages are
//! kept a while (200 ms) and reused; [`return_freed`] hands everything
//! held back before the merge. A merge of many records (a replay, a pull of a million or more)
//! keeps them too ([`keep_freed_while_staging_many`]); a nightly merge does not. Building and writing the tables keeps them too
//! ([`keep_freed_while_publishing`]). `MIMALLOC_PURGE_DELAY` (milliseconds), when set, fixes the delay
//! for the whole run instead.

use std::ffi::{c_int, c_long};

// The allocator's C library, linked into every binary of the crate (tests included), whichever
// allocator the binary uses: the calls below then only set options of an idle mimalloc.
extern crate mimalloc as _;

extern "C" {
    /// mimalloc's `mi_option_set` (linked by libmimalloc-sys).
    fn mi_option_set(option: c_int, value: c_long);
    /// mimalloc's `mi_collect`: with `force`, returns every free page it can now.
    fn mi_collect(force: bool);
}

/// `mi_option_purge_delay` (mimalloc.h, v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// How long freed pages are kept while records are read (mimalloc's default), milliseconds.
const READING_DELAY_MS: c_long = 200;

/// Whether the delay was fixed by `MIMALLOC_PURGE_DELAY`.
fn fixed() -> bool {
    std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
}

fn set_delay(ms: c_long) {
    if !fixed() {
        // SAFETY: sets a plain integer option; mimalloc allows it at any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
    }
}

/// How long freed pages are kept while the KPIs are counted: until [`return_freed`].
const COUNTING_DELAY_MS: c_long = -1;

/// While the KPIs are counted: keep freed pages for the next row groups; end it with
/// [`return_freed`].
pub fn keep_freed_while_counting() {
    set_delay(COUNTING_DELAY_MS);
}

/// While records are read (or, by `demo-source`, served): keep freed pages a while, for reuse.
pub fn keep_freed() {
    set_delay(READING_DELAY_MS);
}

/// While the tables are built and written (after the count, whose memory went back): keep
/// freed pages a while, for reuse. Each column chunk written makes and frees a zstd context,
/// each table its frames: given back at once, they were faulted in again, a tenth of a run
/// that took its counts from the KPI cache. Memory then is a small part of the count's.
pub fn keep_freed_while_publishing() {
    set_delay(READING_DELAY_MS);
}

/// Records staged from which the merge keeps freed pages ([`keep_freed_while_staging_many`]).
pub const MANY_RECORDS: u64 = 1_000_000;

/// While a replay, or a pull of at least [`MANY_RECORDS`] records, is merged into staging:
/// keep freed pages a while, for reuse; end it with [`return_freed`]. Each partition's merge
/// frees and reallocates its keys, row groups and zstd contexts: given back at once, at ten
/// million records a fifth of the merge's time went to faulting them in again (stage 33–36 s
/// against 26–28 s, a third of the run's system time), for 100 MiB less at the peak (300–304
/// against 399–403 MiB, within a replay's 512 MiB). A nightly run's merge of a few thousand
/// records gives them back at once, and stays within its 256 MiB.
pub fn keep_freed_while_staging_many() {
    set_delay(READING_DELAY_MS);
}

/// From now on memory freed goes back to the system at once, and what is held goes back now.
pub fn return_freed() {
    set_delay(0);
    if !fixed() {
        // SAFETY: mi_collect only frees pages mimalloc holds unused; callable from any thread.
        unsafe { mi_collect(true) };
    }
}

/// At the end of a command, once everything is written: freed memory is no longer handed
/// back, so the threads ending do not give their pages back one range at a time (a few
/// hundred calls, at a million cases) just before the process gives all of it back at once.
pub fn keep_freed_until_exit() {
    set_delay(COUNTING_DELAY_MS);
}

/// Hands back what this thread's heap holds free, before the thread ends: a thread that read
/// records keeps the pages it freed (see [`keep_freed`]) where no other thread's
/// [`return_freed`] reaches them.
pub fn release_thread() {
    // SAFETY: as in `return_freed`.
    unsafe { mi_collect(true) };
}
