//! Entry points in assembly: the boot CPU's `_start`, the secondary CPUs' `__secondary_entry`, and the
//! `__enter_prom` trampoline into the 32-bit big-endian Open Firmware client interface.
//!
//! # How the CPU arrives
//! * Boot CPU: VOF (or SLOF) jumps to the image's load base (0x400000, where `_start` is linked) in
//!   big-endian mode (VOF: also 32-bit mode, MSR[SF]=0), with r5 = client-interface entry. No device
//!   tree pointer is passed; the tree is read through the client interface.
//! * Secondary CPUs: RTAS `start-cpu` starts them at `__secondary_entry`, big-endian, 64-bit, r3 = the
//!   value given to start-cpu (here the address of the CPU's `PerCpu` slot).
//!
//! # The endianness switch
//! The image is little-endian, so its first instructions must make sense both ways (the trick of
//! Linux's FIXUP_ENDIAN). `tdi 0,0,0x48` is encoded 0x08000048 and stored little-endian as bytes
//! `48 00 00 08`: a little-endian CPU executes it as a never-taken trap and falls into `b 191f`; a
//! big-endian CPU reads 0x48000008, i.e. `b .+8`, and lands on the byte-swapped words below, which it
//! reads as:
//! ```text
//!     mfmsr  r11
//!     li     r12,1
//!     sldi   r12,r12,63       # MSR_SF
//!     ori    r12,r12,1        # | MSR_LE
//!     or     r11,r11,r12      # the current MSR, plus 64-bit mode and little-endian
//!     li     r10,0
//!     mtmsrd r10,1            # EE = RI = 0
//!     bcl    20,31,$+4
//!     mflr   r10
//!     addi   r10,r10,20       # address of label 191
//!     mtsrr0 r10
//!     mtsrr1 r11
//!     rfid                    # continue at 191 in LE, 64-bit
//! ```
//! Unlike Linux's macro it also sets MSR[SF], because VOF enters in 32-bit mode. It clobbers r10-r12.
//! The encodings were produced with `llvm-mc --triple=powerpc64-unknown-linux-gnu --show-encoding`.

use crate::{asm, percpu, smp};

core::arch::global_asm!(
    r#"
    .macro NMILOG_FIXUP_ENDIAN
    tdi 0, 0, 0x48
    b 191f
    .long 0xa600607d    /* mfmsr  r11        */
    .long 0x01008039    /* li     r12,1      */
    .long 0x06f88c79    /* sldi   r12,r12,63 */
    .long 0x01008c61    /* ori    r12,r12,1  */
    .long 0x78636b7d    /* or     r11,r11,r12*/
    .long 0x00004039    /* li     r10,0      */
    .long 0x6401417d    /* mtmsrd r10,1      */
    .long 0x05009f42    /* bcl    20,31,$+4  */
    .long 0xa602487d    /* mflr   r10        */
    .long 0x14004a39    /* addi   r10,r10,20 */
    .long 0xa6035a7d    /* mtsrr0 r10        */
    .long 0xa6037b7d    /* mtsrr1 r11        */
    .long 0x2400004c    /* rfid              */
191:
    .endm

    .section .text.boot, "ax"
    .globl _start
    .type _start, @function
_start:
    NMILOG_FIXUP_ENDIAN
"#,
    asm::load_toc!(),
    "    /* Zero .bss. r5 (client interface) is preserved. */",
    asm::zero_bss!(),
    "    /* The boot stack. */",
    asm::initial_stack!("__boot_stack_top"),
    asm::enable_fp_vsx!(),
    r#"
    mr 3, 5
    bl {boot_rust}
    nop
3:  b 3b
    .size _start, . - _start

    .globl __secondary_entry
    .type __secondary_entry, @function
    .balign 4
__secondary_entry:
    NMILOG_FIXUP_ENDIAN
"#,
    asm::load_toc!(),
    r#"
    mtspr 272, 3                /* SPRG0 = &PerCpu */
    ld 1, {stack_top}(3)
    li 0, 0
    std 0, 0(1)
"#,
    asm::enable_fp_vsx!(),
    r#"
    bl {secondary_rust}         /* r3 = &PerCpu */
    nop
4:  b 4b
    .size __secondary_entry, . - __secondary_entry

    /*
     * i32 __enter_prom(args: *mut CiArgs (r3), entry: usize (r4))
     * Calls the 32-bit big-endian client interface. The firmware, running 32-bit, may clobber the
     * high halves of any register it saves, so r2 and r13-r31 are kept in this frame and restored.
     * Frame (224 bytes): 0 back chain, 16 LR save (caller's frame), 32 r2, 40.. r13-r31, 192 CR, 200 MSR.
     */
    .text
    .globl __enter_prom
    .type __enter_prom, @function
    .balign 4
__enter_prom:
    mflr 0
    std 0, 16(1)
    stdu 1, -224(1)
    std 2, 32(1)
    .irp n, 13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std \n, (40 + (\n - 13) * 8)(1)
    .endr
    mfcr 10
    std 10, 192(1)
    mfmsr 11
    std 11, 200(1)
    mtsrr0 4                    /* firmware entry */
    bcl 20, 31, 5f
5:  mflr 4
    addi 4, 4, (6f - 5b)
    mtlr 4                      /* firmware returns (blr) to 6: */
    li 12, 1
    sldi 12, 12, 63
    ori 12, 12, 1               /* MSR_SF | MSR_LE */
    andc 11, 11, 12
    mtsrr1 11                   /* 32-bit, big-endian */
    rfid
6:
    NMILOG_FIXUP_ENDIAN         /* back in BE 32-bit: switch to LE 64-bit */
    clrldi 1, 1, 32             /* the firmware may have dirtied r1's high half */
    ld 0, 200(1)
    mtmsrd 0                    /* the MSR we had on entry */
    isync
    ld 2, 32(1)
    .irp n, 13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld \n, (40 + (\n - 13) * 8)(1)
    .endr
    ld 10, 192(1)
    mtcr 10
    addi 1, 1, 224
    ld 0, 16(1)
    mtlr 0
    extsw 3, 3                  /* the 32-bit return value, sign-extended */
    blr
    .size __enter_prom, . - __enter_prom

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
__boot_stack:
    .space 65536
__boot_stack_top:
    .text
    "#,
    boot_rust = sym boot_rust,
    secondary_rust = sym smp::secondary_rust,
    stack_top = const percpu::OFF_STACK_TOP,
);

/// The boot CPU's first Rust code: little-endian, 64-bit, on the boot stack, r2 set, .bss zeroed.
extern "C" fn boot_rust(client_interface: usize) -> ! {
    crate::of::init(client_interface);
    // Logical CPU 0; kmain fills in the hardware id once it has read /cpus and asked RTAS.
    smp::init_boot_cpu(0);
    crate::kmain()
}
