//! Damages the redb files on disk (the log file and the checkpoint file) — flipped bytes, a cut
//! tail, a missing file — and checks that opening or reading reports what was wrong and never
//! returns wrong data.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use txn_storage::redb_storage::{
    CHECKPOINT_CREATED_MARKER, CHECKPOINT_FILE_NAME, CREATED_MARKER, FILE_NAME,
    INTEGRITY_FAILED_MARKER,
};
use txn_storage::{LiveRow, RedbStorage, Storage, StorageError};

const N_EPOCHS: u64 = 20;
const N_ROWS: usize = 300;

/// A batch whose bytes spell out its epoch, so a test can find it in the file.
fn batch(epoch: u64) -> Vec<u8> {
    format!("EPOCH-{epoch:04}-").repeat(250).into_bytes()
}

fn row(idx: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("key{idx:04}").into_bytes(),
        format!("ROWVALUE-key{idx:04}-padding-padding").into_bytes(),
    )
}

/// Everything a store returns: its log and its latest checkpoint.
type Contents = (Vec<(u64, Vec<u8>)>, Option<u64>, Vec<LiveRow>);

fn contents(store: &RedbStorage) -> Result<Contents, StorageError> {
    let mut epochs = Vec::new();
    store.read_epochs(0, &mut |epoch, batch| {
        epochs.push((epoch, batch.to_vec()));
        Ok(())
    })?;
    let mut rows = Vec::new();
    let latest = store.read_latest_checkpoint(&mut |key, value| {
        rows.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    Ok((epochs, latest, rows))
}

/// Writes the reference store into `dir` and returns what it contains.
fn populate(dir: &Path) -> Contents {
    let store = RedbStorage::open(dir).unwrap();
    for epoch in 1..=N_EPOCHS {
        store.append_epoch(epoch, &batch(epoch)).unwrap();
    }
    let rows: Vec<_> = (0..N_ROWS)
        .map(|idx| {
            let (key, value) = row(idx);
            (key, Some(value))
        })
        .collect();
    store.write_checkpoint_rows(15, &rows).unwrap();
    store.complete_checkpoint(15).unwrap();
    contents(&store).unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(needle)))
}

/// Opens and reads the whole store: the first error, or what it returned.
fn open_and_read(dir: &Path) -> Result<Contents, StorageError> {
    contents(&RedbStorage::open(dir)?)
}

#[test]
fn flipped_byte_in_a_log_record_names_its_epoch() {
    // Goal: a flipped byte inside epoch 7's record is reported as Corrupt { epoch: 7 }.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = find(&bytes, b"EPOCH-0007-") + 100;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let err = open_and_read(dir.path()).expect_err("a damaged record was accepted");
    assert!(
        matches!(err, StorageError::Corrupt { epoch: 7, .. }),
        "got {err}"
    );
    eprintln!("reported: {err}");
}

#[test]
fn flipped_byte_in_a_checkpoint_row_names_its_key() {
    // Goal: a flipped byte inside a checkpoint row's value is reported naming that row's key.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = dir.path().join(CHECKPOINT_FILE_NAME);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = find(&bytes, b"ROWVALUE-key0123-") + 20;
    bytes[at] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let err = open_and_read(dir.path()).expect_err("a damaged row was accepted");
    match &err {
        StorageError::CorruptStore { location, .. } => {
            assert!(
                location.contains("key0123"),
                "location {location:?} names another row"
            );
        }
        other => panic!("expected CorruptStore, got {other}"),
    }
    eprintln!("reported: {err}");
}

#[test]
fn random_byte_flips_never_return_wrong_data() {
    // Goal: whatever byte of the file is flipped, opening and reading either fails with a
    // storage error or returns exactly the original contents — never other data, never a panic.
    let seed: u64 = std::env::var("VMSDB_CORRUPTION_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5EED_0004);
    let n_flips: usize = std::env::var("VMSDB_CORRUPTION_FLIPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    eprintln!(
        "random_byte_flips seed={seed} flips={n_flips} \
         (replay: VMSDB_CORRUPTION_SEED={seed} VMSDB_CORRUPTION_FLIPS={n_flips})"
    );
    let dir = tempfile::tempdir().unwrap();
    let original = populate(dir.path());
    for name in [FILE_NAME, CHECKPOINT_FILE_NAME] {
        let file = dir.path().join(name);
        let pristine = std::fs::read(&file).unwrap();
        // Most of the file is preallocated zeroes; flip bytes that hold something.
        let live: Vec<usize> = (0..pristine.len())
            .filter(|&idx| pristine[idx] != 0)
            .collect();
        let mut state = seed;
        let mut n_detected = 0;
        for flip_idx in 0..n_flips {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let at = live[(state >> 16) as usize % live.len()];
            let bit = 1u8 << ((state >> 8) % 8);
            let mut bytes = pristine.clone();
            bytes[at] ^= bit;
            std::fs::write(&file, &bytes).unwrap();
            let _ = std::fs::remove_file(dir.path().join(INTEGRITY_FAILED_MARKER));
            let outcome = catch_unwind(AssertUnwindSafe(|| open_and_read(dir.path())));
            match outcome {
                Err(_) => {
                    panic!("{name}: flip {flip_idx} (byte {at}, bit {bit:#04x}) made a read panic")
                }
                Ok(Err(_)) => n_detected += 1,
                Ok(Ok(read)) => assert!(
                    read == original,
                    "{name}: flip {flip_idx} (byte {at}, bit {bit:#04x}) returned different data"
                ),
            }
        }
        std::fs::write(&file, &pristine).unwrap();
        eprintln!(
            "{name}: {n_detected} of {n_flips} flips detected, the rest hit bytes no read \
             depends on"
        );
        assert!(
            n_detected > 0,
            "{name}: no flip was detected: the test did not damage live data"
        );
    }
}

#[test]
fn cut_tail_is_refused_or_harmless() {
    // Goal: a file cut short (a torn write at the end) fails to open with a clear error or,
    // when only unused space was cut, reads back the original contents.
    let dir = tempfile::tempdir().unwrap();
    let original = populate(dir.path());
    let mut n_refused = 0;
    for name in [FILE_NAME, CHECKPOINT_FILE_NAME] {
        let file = dir.path().join(name);
        let pristine = std::fs::read(&file).unwrap();
        for keep in [
            pristine.len() - 1,
            pristine.len() - 4096,
            pristine.len() / 2,
            4096,
            100,
            0,
        ] {
            std::fs::write(&file, &pristine[..keep]).unwrap();
            match open_and_read(dir.path()) {
                Err(err) => {
                    n_refused += 1;
                    assert!(
                        matches!(err, StorageError::CorruptStore { .. }),
                        "cut to {keep} bytes reported as {err:?}"
                    );
                    eprintln!("{name} cut to {keep} bytes: {err}");
                }
                Ok(read) => assert!(
                    read == original,
                    "cut to {keep} bytes returned different data"
                ),
            }
        }
        std::fs::write(&file, &pristine).unwrap();
    }
    assert!(n_refused > 0, "no cut was refused");
}

#[test]
fn emptied_or_missing_file_is_not_a_new_store() {
    // Goal: once a store exists, an emptied or deleted file — the log or the checkpoint file —
    // is reported, not silently replaced by a new empty one.
    for (name, created) in [
        (FILE_NAME, CREATED_MARKER),
        (CHECKPOINT_FILE_NAME, CHECKPOINT_CREATED_MARKER),
    ] {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path());
        assert!(dir.path().join(created).exists());
        let file = dir.path().join(name);
        std::fs::write(&file, b"").unwrap();
        let err = open_and_read(dir.path()).expect_err("an emptied file opened as a new store");
        assert!(
            matches!(err, StorageError::CorruptStore { .. }),
            "{name}: got {err:?}"
        );
        std::fs::remove_file(&file).unwrap();
        let err = open_and_read(dir.path()).expect_err("a missing file opened as a new store");
        assert!(
            matches!(err, StorageError::CorruptStore { .. }),
            "{name}: got {err:?}"
        );
        eprintln!("{name}: reported: {err}");
    }
}
