//! The idle daemon's memory footprint: give back what start-up used and idling does not.
//!
//! Start-up runs code it never runs again (plugin loading, TLS set-up, migrations, the
//! recovery scan), and the kernel maps code in 64 KiB runs around each page touched, so after
//! start-up most of the host's and every plugin's machine code counts as resident although an
//! idle daemon runs a small part of it. Each plugin library carries its own copy of std,
//! tokio and its TLS stack, so this grows with every channel enabled.

/// Caps glibc's malloc arenas at two. By default every thread that allocates may get its own
/// arena (up to eight per core), each holding freed memory of its own; the host and every
/// plugin's runtime add threads, and two arenas serve two cores. Call first thing in `main`.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns freed heap pages and the mappings of start-up-only code to the system. Call after
/// start-up and after closing many connections.
pub fn release_idle_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    unmap_code_pages();
}

/// Drops this process's page-table entries for every loaded object's read-only segments
/// (machine code, constants, unwind tables): never written, so always identical to the file.
/// The pages stay in the page cache; what runs again faults back in without I/O. Writable and
/// relocated (RELRO) segments are left alone: dropping those would lose their contents, and
/// so are objects with text relocations and the vDSO.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn unmap_code_pages() {
    // dl_iterate_phdr holds the loader's lock: no library is mapped or relocated meanwhile.
    // SAFETY: the callback only reads the program headers the loader hands it.
    unsafe {
        libc::dl_iterate_phdr(Some(release_object), std::ptr::null_mut());
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
unsafe extern "C" fn release_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid info whose phdr array has dlpi_phnum entries, mapped
    // at dlpi_addr + p_vaddr, for as long as the callback runs.
    unsafe {
        let info = &*info;
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
        let bias = info.dlpi_addr as usize;
        let vdso = libc::getauxval(libc::AT_SYSINFO_EHDR) as usize;
        let loads = || phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD);
        if loads().any(|p| bias + p.p_vaddr as usize == vdso) || has_text_relocations(bias, phdrs) {
            return 0;
        }
        let page = page_size();
        for p in loads().filter(|p| p.p_flags & libc::PF_W == 0) {
            let (start, len) = (bias + p.p_vaddr as usize, p.p_memsz as usize);
            // Whole pages inside the segment only: an edge page may be shared with a
            // neighbouring writable segment.
            let first = start.div_ceil(page) * page;
            let end = (start + len) / page * page;
            if end > first {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
    0
}

/// Whether an object's dynamic section asks for text relocations (its code pages were
/// written at load time).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
unsafe fn has_text_relocations(bias: usize, phdrs: &[libc::Elf64_Phdr]) -> bool {
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
        return false;
    };
    let mut entry = (bias + dynamic.p_vaddr as usize) as *const [u64; 2];
    // SAFETY: PT_DYNAMIC points at the object's mapped dynamic array, ended by DT_NULL.
    unsafe {
        loop {
            let [tag, value] = *entry;
            match tag as i64 {
                DT_NULL => return false,
                DT_TEXTREL => return true,
                DT_FLAGS if value & DF_TEXTREL != 0 => return true,
                _ => entry = entry.add(1),
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}
