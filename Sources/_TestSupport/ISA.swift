import XCTest
import _MoEKernels

/// Instruction-set paths this CPU can run, each forced in turn by `forEachISA`.
public let supportedISAs: [Int32] = [MOEK_ISA_SCALAR, MOEK_ISA_AVX2, MOEK_ISA_AVX512, MOEK_ISA_NEON]
    .map { Int32($0.rawValue) }
    .filter { moek_isa_supported($0) != 0 }

/// Runs `body` once per supported ISA (forced), then restores the best one.
public func forEachISA(_ body: (String) throws -> Void) rethrows {
    defer { _ = moek_force_isa(moek_best_isa()) }
    for isa in supportedISAs {
        XCTAssertEqual(moek_force_isa(isa), 1)
        try body(String(cString: moek_isa_name(isa)))
    }
}
