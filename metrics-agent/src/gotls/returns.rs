//! The `RET` instructions of a function, found by decoding its body from its
//! first byte to its end: uprobes there see the function's results without
//! uretprobes, which Go's moving goroutine stacks rule out.
//!
//! Decoding uses `iced-x86` (decoder only): x86 instruction lengths depend on
//! prefixes, ModRM/SIB, VEX/EVEX encodings and immediates, and a length
//! decoder of our own would be one more thing to get subtly wrong on the
//! instructions Go's compiler emits (SSE/AVX in copies and hashing). Go puts
//! no data in its text (jump tables live in rodata) and pads between
//! functions with `INT3`, so a linear sweep sees every instruction.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReturnsError {
    #[error("undecodable instruction at {address:#x}")]
    Undecodable { address: u64 },
    #[error("no RET instruction in the function at {address:#x}")]
    NoReturn { address: u64 },
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
    fn bad_bodies_are_errors() {
        assert_eq!(return_addresses(&[0x90, 0x90], 0x10), Err(ReturnsError::NoReturn { address: 0x10 }));
        assert_eq!(return_addresses(&[0xc3, 0x48], 0x10), Err(ReturnsError::Undecodable { address: 0x11 }));
        assert_eq!(return_addresses(&[0x06, 0xc3], 0x10), Err(ReturnsError::Undecodable { address: 0x10 }));
    }
}
