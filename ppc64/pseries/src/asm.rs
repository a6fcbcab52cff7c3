//! Assembly snippets shared by the hand-written entry points (the kernel's boot and secondary entry,
//! its system-reset and interrupt entries, the capture stage's entry), as string literals for
//! `global_asm!` templates: `global_asm!(r#"…"#, asm::load_toc!(), r#"…"#, …)`.

/// `r2 = .TOC.` (absolute: each image runs where it is linked, below 2 GiB).
macro_rules! load_toc {
    () => {
        "
    lis 2, .TOC.@ha
    addi 2, 2, .TOC.@l
"
    };
}

/// `MSR |= VEC (1<<25) | VSX (1<<23) | FP (1<<13) | RI (1<<1)`: compiled `core` may use FP, VMX and
/// VSX. Clobbers r11 and r12.
macro_rules! enable_fp_vsx {
    () => {
        "
    mfmsr 11
    lis 12, 0x0280
    ori 12, 12, 0x2002
    or 11, 11, 12
    mtmsrd 11
    isync
"
    };
}

/// Zeroes `.bss` (`__bss_start..__bss_end`, 8-byte aligned by the linker script). Clobbers r0, r6,
/// r7 and the local labels 1 and 2; keeps r3-r5.
macro_rules! zero_bss {
    () => {
        "
    lis 6, __bss_start@ha
    addi 6, 6, __bss_start@l
    lis 7, __bss_end@ha
    addi 7, 7, __bss_end@l
    li 0, 0
1:  cmpld 6, 7
    bge 2f
    std 0, 0(6)
    addi 6, 6, 8
    b 1b
2:
"
    };
}

/// `r1 = $top` with a zero back chain and a 64-byte frame above it. Clobbers r0.
macro_rules! initial_stack {
    ($top:literal) => {
        concat!(
            "
    lis 1, ",
            $top,
            "@ha
    addi 1, 1, ",
            $top,
            "@l
    li 0, 0
    stdu 0, -64(1)
"
        )
    };
}

pub(crate) use {enable_fp_vsx, initial_stack, load_toc, zero_bss};
