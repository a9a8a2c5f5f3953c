//! Every parser of outside input: none may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    master_process::__fuzz::all(data);
});
