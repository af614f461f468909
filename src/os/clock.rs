//! The local time zone, as the C library sees it (`TZ`, `/etc/localtime`):
//! for reading times a person writes (`--since 08:46`).

/// The local UTC offset in seconds at `at_ms`; 0 where it cannot be told.
pub(crate) fn local_offset_secs(at_ms: i64) -> i32 {
    let t: libc::time_t = (at_ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes only into the struct we pass, which is
    // zeroed and lives for the call.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff as i32
    }
}
