//! The `RET` instructions of a function, found by decoding its body from its
//! first byte to its end: uprobes there see the function's results without
//! uretprobes, which Go's moving goroutine stacks rule out. And the first
//! instruction after a Go function's stack check (`after_stack_check`): a
//! uprobe there runs once per call, where one on the entry runs again when
//! the stack grows.
//!
//! Decoding uses `iced-x86` (decoder only): x86 instruction lengths depend on
//! prefixes, ModRM/SIB, VEX/EVEX encodings and immediates, and a length
//! decoder of our own would be one more thing to get subtly wrong on the
//! instructions Go's compiler emits (SSE/AVX in copies and hashing). Go puts
//! no data in its text (jump tables live in rodata) and pads between
//! functions with `INT3`, so a linear sweep sees every instruction.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReturnsError {
    #[error("undecodable instruction at {address:#x}")]
    Undecodable { address: u64 },
    #[error("no RET instruction in the function at {address:#x}")]
    NoReturn { address: u64 },
    #[error("no stack check (CMP with [R14+0x10], then JBE or JB) opens the function at {address:#x}")]
    NoStackCheck { address: u64 },
}

/// How many instructions a stack check may take: `CMP RSP, [R14+0x10]` or
/// `LEA R12, [RSP-frame]` + `CMP R12, [R14+0x10]`, then the jump.
const STACK_CHECK_INSTRUCTIONS: usize = 3;

/// The address of the instruction after the stack check that opens a Go
/// function of 64-bit code at `address`: a compare with the goroutine's
/// stack guard (`g.stackguard0`, `[R14+0x10]`) and a conditional jump to
/// the block that calls `runtime.morestack` and jumps back to the entry.
/// Reached once per call, with the argument registers as at the entry (the
/// check writes only R12 and the flags); the entry itself runs twice when
/// the stack grows.
pub fn after_stack_check(code: &[u8], address: u64) -> Result<u64, ReturnsError> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut compared = false;
    for _ in 0..STACK_CHECK_INSTRUCTIONS {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if instruction.code() == Code::INVALID {
            return Err(ReturnsError::Undecodable { address: instruction.ip() });
        }
        // Go's check jumps if the stack pointer is at or below the guard (`JLS`).
        let below = matches!(instruction.mnemonic(), Mnemonic::Jbe | Mnemonic::Jb);
        if compared && below && instruction.near_branch_target() > instruction.ip() {
            return Ok(instruction.next_ip());
        }
        compared = instruction.mnemonic() == Mnemonic::Cmp
            && (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory)
            && instruction.memory_base() == Register::R14
            && instruction.memory_index() == Register::None
            && instruction.memory_displacement64() == 0x10;
    }
    Err(ReturnsError::NoStackCheck { address })
}

/// Addresses of the `RET` instructions in `code`, the body of a function
/// of 64-bit code at `address`.
pub fn return_addresses(code: &[u8], address: u64) -> Result<Vec<u64>, ReturnsError> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.code() == Code::INVALID {
            // The function's last bytes may be a cut instruction of the
            // padding only if the table's sizes are wrong: an error either way.
            return Err(ReturnsError::Undecodable { address: instruction.ip() });
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    if returns.is_empty() {
        return Err(ReturnsError::NoReturn { address });
    }
    Ok(returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_are_found_between_instructions_of_every_length() {
        let code = [
            0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
            0x76, 0x05, // jbe +5
            0xc3, // ret
            0x48, 0x89, 0xc3, // mov rbx, rax
            0xc3, // ret
            0x48, 0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, // mov rax, imm64 of 0xc3 bytes
            0xc5, 0xfe, 0x6f, 0x06, // vmovdqu ymm0, [rsi]
            0xc2, 0x08, 0x00, // ret 8
            0xcc, 0xcc, // int3 padding
        ];
        assert_eq!(return_addresses(&code, 0x1000), Ok(vec![0x1006, 0x100a, 0x1019]));
    }

    #[test]
    fn the_instruction_after_either_stack_check_is_found() {
        // Go 1.19 (frame 0x68 above the guard): LEA, CMP, JBE near.
        let big = [
            0x4c, 0x8d, 0x64, 0x24, 0x98, // lea r12, [rsp-0x68]
            0x4d, 0x3b, 0x66, 0x10, // cmp r12, [r14+0x10]
            0x0f, 0x86, 0x64, 0x07, 0x00, 0x00, // jbe +0x764
            0x55, // push rbp
        ];
        assert_eq!(after_stack_check(&big, 0x1000), Ok(0x100f));
        // A small frame: CMP RSP, then JBE short.
        let small = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55];
        assert_eq!(after_stack_check(&small, 0x10), Ok(0x16));
    }

    #[test]
    fn a_function_without_a_stack_check_is_an_error() {
        let nosplit = [0x48, 0x89, 0xc3, 0x76, 0x20, 0xc3]; // mov rbx, rax; jbe; ret
        assert_eq!(after_stack_check(&nosplit, 0x10), Err(ReturnsError::NoStackCheck { address: 0x10 }));
        let other_guard = [0x49, 0x3b, 0x66, 0x18, 0x76, 0x20]; // cmp rsp, [r14+0x18]; jbe
        assert_eq!(after_stack_check(&other_guard, 0x10), Err(ReturnsError::NoStackCheck { address: 0x10 }));
        let backward = [0x49, 0x3b, 0x66, 0x10, 0x76, 0xf0]; // cmp; jbe back
        assert_eq!(after_stack_check(&backward, 0x10), Err(ReturnsError::NoStackCheck { address: 0x10 }));
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert_eq!(return_addresses(&[0x90, 0x90], 0x10), Err(ReturnsError::NoReturn { address: 0x10 }));
        assert_eq!(return_addresses(&[0xc3, 0x48], 0x10), Err(ReturnsError::Undecodable { address: 0x11 }));
        assert_eq!(return_addresses(&[0x06, 0xc3], 0x10), Err(ReturnsError::Undecodable { address: 0x10 }));
    }
}
