import MoECore
import XCTest

/// The benchmark's shape (not its speed: tests never judge wall-clock time).
final class KernelBenchmarkTests: XCTestCase {
    func testQuickRunReportsEverySectionWithFiniteFigures() {
        let report = KernelBenchmark.run(pool: ThreadPool(threads: 2), quick: true)
        XCTAssertEqual(report.threads, 2)
        XCTAssertTrue(report.readBandwidthGbs.isFinite && report.readBandwidthGbs > 0)
        XCTAssertTrue(report.fmaPeakGflops.isFinite && report.fmaPeakGflops > 0)
        XCTAssertFalse(report.matvec.isEmpty)
        XCTAssertFalse(report.matmul.isEmpty)
        XCTAssertFalse(report.groupedMatmul.isEmpty)
        for figure in report.matvec.map(\.gbs) + report.matmul.map(\.gflops) + report.groupedMatmul.map(\.gflops) {
            XCTAssertTrue(figure.isFinite && figure > 0)
        }
    }

    func testSectionsCanBeChosen() {
        let report = KernelBenchmark.run(pool: ThreadPool(threads: 1), quick: true, sections: [.matmul])
        XCTAssertTrue(report.matvec.isEmpty)
        XCTAssertFalse(report.matmul.isEmpty)
        XCTAssertTrue(report.groupedMatmul.isEmpty)
    }
}
