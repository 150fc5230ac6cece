import Foundation
import MoE
import MoECore
import XCTest

final class ConfigFileTests: XCTestCase {
    func testJSONConfigErrorsNameTheField() {
        let bad = #"{"name": "top-p", "bias": [1, "x"]}"#
        XCTAssertThrowsError(try ConfigFile.decode(RouterConfig.self, data: Data(bad.utf8), path: "r.json", format: .json)) { error in
            guard case let .invalidValue(path, field, _)? = error as? MoECoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "r.json")
            XCTAssertEqual(field, "bias[1]")
        }
        XCTAssertThrowsError(try ConfigFile.decode(RouterConfig.self, data: Data("{\"name\": ".utf8), path: "r.json", format: .json))
    }

    func testFormatFollowsTheExtension() {
        XCTAssertEqual(ConfigFile.format(of: "a/b.TOML"), .toml)
        XCTAssertEqual(ConfigFile.format(of: "a/b.json"), .json)
    }

    func testLoadReadsFilesAndReportsMissingOnes() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-\(UUID().uuidString).json").path
        try Data(#"{"name": "switch", "capacity_factor": 1, "drop_by": "score"}"#.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try RouterConfig.load(path: path)
        XCTAssertEqual(config.dropBy, .score)
        XCTAssertEqual(config.capacityFactor, 1)
        XCTAssertThrowsError(try RouterConfig.load(path: "/nonexistent/r.json")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/r.json"))
        }
    }
}
