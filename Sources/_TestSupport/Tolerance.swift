import XCTest

/// Asserts that `observed` equals `expected` element by element within
/// `abs(observed - expected) <= absolute + relative * scale[i]`, where `scale[i]` defaults to
/// `abs(expected[i])`. On failure it reports the worst element: its index, both values, the
/// difference and the tolerance there, so a failure explains itself.
public func assertClose(_ observed: [Float], _ expected: [Float], absolute: Float = 0, relative: Float = 0,
                        scale: [Float]? = nil, _ message: @autoclosure () -> String = "",
                        file: StaticString = #filePath, line: UInt = #line) {
    guard observed.count == expected.count else {
        XCTFail("count \(observed.count) != expected \(expected.count). \(message())", file: file, line: line)
        return
    }
    var worst = -1
    var worstExcess: Float = 0
    for i in observed.indices {
        let tol = absolute + relative * (scale?[i] ?? abs(expected[i]))
        let diff = abs(observed[i] - expected[i])
        let bad = diff.isNaN ? !(observed[i].isNaN && expected[i].isNaN) : diff > tol
        if bad {
            let excess = diff.isNaN ? .infinity : diff - tol
            if worst < 0 || excess > worstExcess { worst = i; worstExcess = excess }
        }
    }
    if worst >= 0 {
        let tol = absolute + relative * (scale?[worst] ?? abs(expected[worst]))
        XCTFail("""
            element \(worst) of \(observed.count): observed \(observed[worst]), expected \(expected[worst]), \
            |diff| \(abs(observed[worst] - expected[worst])) > tolerance \(tol). \(message())
            """, file: file, line: line)
    }
}
