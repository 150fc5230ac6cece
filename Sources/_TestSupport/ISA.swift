import XCTest
import _MoEKernels

/// Instruction-set paths this CPU can run, each forced in turn by `forEachISA`.
public let supportedISAs: [Int32] = [MOEK_ISA_SCALAR, MOEK_ISA_AVX2, MOEK_ISA_AVX512, MOEK_ISA_NEON]
    .map { Int32($0.rawValue) }
    .filter { moek_isa_supported($0) != 0 }

/// Runs `body` once per supported ISA (forced), then restores the best one. On AVX-512 with
/// VNNI it runs twice, the second time with the VNNI leaves forbidden ("avx512 without vnni"),
/// so the leaves of AVX-512 machines without VNNI are checked too.
public func forEachISA(_ body: (String) throws -> Void) rethrows {
    defer {
        _ = moek_force_isa(moek_best_isa())
        _ = moek_allow_vnni(1)
    }
    for isa in supportedISAs {
        XCTAssertEqual(moek_force_isa(isa), 1)
        try body(String(cString: moek_isa_name(isa)))
        if isa == Int32(MOEK_ISA_AVX512.rawValue) && moek_allow_vnni(1) != 0 {
            _ = moek_allow_vnni(0)
            defer { _ = moek_allow_vnni(1) }
            try body("avx512 without vnni")
        }
    }
}

/// Allows (the default) or forbids the VBMI builds of the one-row VNNI leaves (for machines with
/// VBMI and GFNI), so that tests reach the builds that VNNI machines without them run. Returns
/// whether the VBMI builds run.
@discardableResult
public func allowVBMI(_ on: Bool) -> Bool { moek_allow_vbmi(on ? 1 : 0) != 0 }
