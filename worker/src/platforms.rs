//! Which platforms an engine can run, in OCI's names (`os/arch[/variant]`): its native one,
//! from `docker info`, and the ones the kernel emulates for it, from `binfmt_misc`.
//!
//! An agent declares these to the dispatcher, which gives it only runs of a declared platform,
//! so the list must be what the engine really executes. Emulation counts only when a
//! `binfmt_misc` entry is enabled and has the `F` (fix binary) flag: without it the kernel
//! opens the interpreter path inside the container's root, where it does not exist, and every
//! emulated process fails to start. Entries are recognised by the ELF machine their magic
//! matches, not by their name (`qemu-aarch64`, `aarch64`, `qemu-aarch64-static` all occur).

use std::path::Path;

/// Where the kernel lists its `binfmt_misc` entries.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// The platform `docker info` reports, in OCI's names: the engine reports the kernel's
/// (`x86_64`, `aarch64`). `arm64` is written without containerd's default `v8` variant, as
/// containerd's own normalisation does; a run of `linux/arm64/v8` still matches it.
pub fn native(os_type: Option<&str>, architecture: Option<&str>) -> String {
    let os = os_type.filter(|o| !o.is_empty()).unwrap_or("linux").to_ascii_lowercase();
    let arch = match architecture.unwrap_or("x86_64") {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armhf" | "armv7" => "arm/v7",
        "armv6l" | "armel" => "arm/v6",
        "i386" | "i686" => "386",
        other => other,
    };
    format!("{os}/{arch}")
}

/// The platforms emulated through the `binfmt_misc` entries under `dir` (normally
/// [`BINFMT_MISC`]): none when the directory is absent or emulation is switched off as a
/// whole (`status` is `disabled`). Sorted, without duplicates.
pub fn emulated(dir: &Path) -> Vec<String> {
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    if status.trim() != "enabled" {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut platforms: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_str(), Some("status" | "register")))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| entry_platforms(&text).iter().copied())
        .map(str::to_string)
        .collect();
    platforms.sort();
    platforms.dedup();
    platforms
}

/// The platforms one `binfmt_misc` entry (the text of its file) runs: none unless it is
/// enabled, has the `F` flag and matches ELF executables of a known machine at offset 0.
fn entry_platforms(text: &str) -> &'static [&'static str] {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("enabled") {
        return &[];
    }
    let (mut fix_binary, mut offset, mut magic) = (false, None, None);
    for line in lines {
        if let Some(flags) = line.strip_prefix("flags:") {
            fix_binary = flags.trim().contains('F');
        } else if let Some(value) = line.strip_prefix("offset ") {
            offset = value.trim().parse::<u32>().ok();
        } else if let Some(value) = line.strip_prefix("magic ") {
            magic = Some(value.trim());
        }
    }
    match (fix_binary, offset, magic.and_then(decode_hex)) {
        (true, Some(0), Some(magic)) => elf_platforms(&magic),
        _ => &[],
    }
}

/// The platforms of ELF executables whose header starts with `magic`: the class (32/64-bit),
/// the byte order and `e_machine` decide. qemu-arm runs both ARM variants images are built for.
fn elf_platforms(magic: &[u8]) -> &'static [&'static str] {
    const ELF: &[u8] = b"\x7fELF";
    if magic.len() < 20 || !magic.starts_with(ELF) {
        return &[];
    }
    let (class64, little) = (magic[4] == 2, magic[5] == 1);
    let machine = if little {
        u16::from_le_bytes([magic[18], magic[19]])
    } else {
        u16::from_be_bytes([magic[18], magic[19]])
    };
    // e_machine values from the ELF specification (EM_*).
    match (class64, little, machine) {
        (true, true, 62) => &["linux/amd64"],
        (false, true, 3) => &["linux/386"],
        (true, true, 183) => &["linux/arm64"],
        (false, true, 40) => &["linux/arm/v6", "linux/arm/v7"],
        (true, true, 21) => &["linux/ppc64le"],
        (true, false, 22) => &["linux/s390x"],
        (true, true, 243) => &["linux/riscv64"],
        _ => &[],
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The native platform first, then the emulated ones it is not.
pub fn declared(native: String, emulated: Vec<String>) -> Vec<String> {
    let mut platforms = vec![native];
    for platform in emulated {
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    platforms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's qemu-user-static entries, as the kernel shows them.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const ARM: &str = "enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: F\noffset 0\n\
        magic 7f454c4601010100000000000000000002002800\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const S390X: &str = "enabled\ninterpreter /usr/bin/qemu-s390x-static\nflags: OCF\noffset 0\n\
        magic 7f454c4602020100000000000000000000020016\n\
        mask ffffffffffffff00fffffffffffffffffffeffff\n";
    const RISCV64: &str = "enabled\ninterpreter /usr/bin/qemu-riscv64-static\nflags: POCF\n\
        offset 0\nmagic 7f454c460201010000000000000000000200f300\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn the_engines_architecture_in_oci_names() {
        assert_eq!(native(Some("linux"), Some("x86_64")), "linux/amd64");
        assert_eq!(native(Some("linux"), Some("aarch64")), "linux/arm64");
        assert_eq!(native(Some("linux"), Some("armv7l")), "linux/arm/v7");
        assert_eq!(native(Some("linux"), Some("i686")), "linux/386");
        assert_eq!(native(Some("windows"), Some("x86_64")), "windows/amd64");
        assert_eq!(native(None, Some("s390x")), "linux/s390x");
    }

    #[test]
    fn binfmt_entries_by_elf_machine_enabled_and_fix_binary_only() {
        assert_eq!(entry_platforms(AARCH64), ["linux/arm64"]);
        assert_eq!(entry_platforms(ARM), ["linux/arm/v6", "linux/arm/v7"]);
        assert_eq!(entry_platforms(S390X), ["linux/s390x"]);
        assert_eq!(entry_platforms(RISCV64), ["linux/riscv64"]);
        let disabled = AARCH64.replacen("enabled", "disabled", 1);
        assert!(entry_platforms(&disabled).is_empty(), "disabled");
        let no_fix = AARCH64.replace("flags: PF", "flags: P");
        assert!(entry_platforms(&no_fix).is_empty(), "the interpreter is not there in a container");
        let shifted = AARCH64.replace("offset 0", "offset 2");
        assert!(entry_platforms(&shifted).is_empty());
        let wine = "enabled\ninterpreter /usr/bin/wine\nflags: F\noffset 0\nmagic 4d5a\n";
        assert!(entry_platforms(wine).is_empty(), "not ELF");
        let extension = "enabled\ninterpreter /usr/bin/python3\nflags: F\nextension .py\n";
        assert!(entry_platforms(extension).is_empty());
        assert!(entry_platforms("enabled\nflags: F\noffset 0\nmagic 7f454c4x\n").is_empty());
    }

    #[test]
    fn a_binfmt_directory_lists_each_platform_once_and_nothing_when_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        assert!(emulated(dir.path()).is_empty(), "no status file: no binfmt_misc");
        write("status", "enabled\n");
        write("register", "");
        write("qemu-aarch64", AARCH64);
        write("aarch64", AARCH64);
        write("qemu-arm", ARM);
        write("qemu-s390x", &S390X.replace("flags: OCF", "flags: OC"));
        assert_eq!(emulated(dir.path()), ["linux/arm/v6", "linux/arm/v7", "linux/arm64"]);
        write("status", "disabled\n");
        assert!(emulated(dir.path()).is_empty());
        assert!(emulated(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn the_native_platform_leads_and_is_not_repeated() {
        let emulated = vec!["linux/amd64".to_string(), "linux/arm64".to_string()];
        assert_eq!(declared("linux/amd64".into(), emulated), ["linux/amd64", "linux/arm64"]);
    }
}
