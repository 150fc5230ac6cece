import Foundation
import MoE
import MoECore
import XCTest

final class RouteReportTests: XCTestCase {
    func parse(_ text: String) throws -> Tensor { try RouterLogitsFile.parse(Data(text.utf8), path: "z.json") }

    func testParsesPerTokenLogits() throws {
        let z = try parse("[[1, 2.5, -3], [0, 0, 1e-3]]")
        XCTAssertEqual(z.shape, [2, 3])
        XCTAssertEqual(z.toFloats(), [1, 2.5, -3, 0, 0, 1e-3])
    }

    func testBadLogitsNameTheTokenAndIndex() {
        func fails(_ text: String, field: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try parse(text), file: file, line: line) { error in
                guard case let .invalidLogits(path, f, _)? = error as? MoEError else { return XCTFail("\(error)", file: file, line: line) }
                XCTAssertEqual(path, "z.json", file: file, line: line)
                XCTAssertEqual(f, field, file: file, line: line)
            }
        }
        fails("[[1, 2], [3]]", field: "token 1")
        fails("[[1, \"x\"]]", field: "token 0[1]")
        fails("[[1, true]]", field: "token 0[1]")
        fails("[1, 2]", field: "token 0")
        fails("{\"a\": 1}", field: "(top level)")
        fails("[]", field: "(top level)")
        fails("[[]]", field: "(top level)")
        fails("[[1, 2", field: "(top level)")
        fails("[[1e60]]", field: "token 0[0]")
    }

    func testReportListsDropsAndLosses() {
        let z = Tensor(shape: [3, 2], values: [3, 0, 1, 0, 2, 0])
        let report = RouteReport(router: SwitchRouter(experts: 2, capacity: Capacity(factor: 1)), logits: z)
        XCTAssertEqual(report.router, "switch")
        XCTAssertEqual(report.tokens.map(\.experts), [[0], [0], []])
        XCTAssertEqual(report.tokens.map(\.dropped), [false, false, true])
        XCTAssertEqual(report.tokens[2].droppedExperts, [0])
        XCTAssertNotNil(report.auxLosses["load_balance"])
        XCTAssertNotNil(report.auxLosses["z_loss"])
    }
}
