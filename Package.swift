// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "MoEKit",
    products: [
        .library(name: "MoECore", targets: ["MoECore"]),
        .library(name: "MoE", targets: ["MoE"]),
        .library(name: "MoEQuant", targets: ["MoEQuant"]),
        .library(name: "MoEModels", targets: ["MoEModels"]),
        .library(name: "MoEGenerate", targets: ["MoEGenerate"]),
        .library(name: "MoETrain", targets: ["MoETrain"]),
        .library(name: "MoEServer", targets: ["MoEServer"]),
        .library(name: "MoEDistributed", targets: ["MoEDistributed"]),
        .executable(name: "moe", targets: ["moe"]),
    ],
    // `swift build --traits MPI` links Open MPI (Debian: libopenmpi-dev) into MoEDistributed, so
    // `mpirun -np P moe ... --expert-parallel P` runs across ranks. Without it the package needs
    // only the Swift toolchain, and MoEDistributed runs its ranks as threads of one process.
    traits: [
        .trait(name: "MPI", description: "Expert and data parallelism across processes and machines over MPI (needs Open MPI's headers and library)."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // The compute-bound leaf loops (matmul micro-kernel, dot products, dtype widening),
        // each in AVX-512, AVX2+FMA, NEON and scalar, chosen at run time. No unsafe flags:
        // ISA-specific code uses `__attribute__((target(...)))`.
        .target(name: "_MoEKernels"),
        .target(name: "MoECore", dependencies: ["_MoEKernels"]),
        .target(name: "MoE", dependencies: ["MoECore", "_MoEKernels"]),
        // Quantization policy: llama.cpp's per-tensor type mixes (the quantizers themselves are
        // C leaves reached through MoECore's `Tensor.quantized(to:)`).
        .target(name: "MoEQuant", dependencies: ["MoECore"]),
        .target(name: "MoEModels", dependencies: ["MoECore", "MoE", "MoEQuant", "_MoEKernels"]),
        .target(name: "MoEGenerate", dependencies: ["MoECore", "MoE", "MoEModels"]),
        .target(name: "MoETrain", dependencies: ["MoECore", "MoE", "MoEModels", "MoEDistributed", "_MoEKernels"]),
        // The OpenAI-compatible HTTP server over MoEGenerate's batch engine.
        .target(name: "MoEServer", dependencies: [
            "MoECore", "MoE", "MoEModels", "MoEGenerate",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // MPI's C API as Swift sees it: <mpi.h> plus static inline accessors for what Open MPI
        // defines as macros (MPI_COMM_WORLD, the datatypes). Only built with the MPI trait.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        // Expert parallelism (experts sharded over ranks, rows dispatched with all-to-all) and
        // the collectives it runs on: MPI with the MPI trait, threads of one process always.
        .target(name: "MoEDistributed", dependencies: [
            "MoECore", "MoE", "MoEModels",
            .target(name: "CMPI", condition: .when(traits: ["MPI"])),
        ]),
        .executableTarget(
            name: "moe",
            dependencies: [
                "MoECore",
                "MoE",
                "MoEModels",
                "MoEQuant",
                "MoEGenerate",
                "MoETrain",
                "MoEServer",
                "MoEDistributed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            resources: [.copy("DefaultModel")]),
        .target(name: "_TestSupport", dependencies: ["_MoEKernels"], path: "Sources/_TestSupport"),
        .testTarget(name: "MoECoreTests", dependencies: ["MoECore", "_MoEKernels", "_TestSupport"]),
        .testTarget(name: "MoETests", dependencies: ["MoE", "MoECore", "_TestSupport"]),
        .testTarget(name: "MoEModelsTests", dependencies: ["MoEModels", "MoEQuant", "MoE", "MoECore", "_TestSupport"],
                    exclude: []),
        .testTarget(name: "MoEGenerateTests", dependencies: ["MoEGenerate", "MoEModels", "MoE", "MoECore"]),
        .testTarget(name: "MoETrainTests", dependencies: ["MoETrain", "MoE", "MoECore", "MoEModels", "MoEDistributed", "_TestSupport"]),
        .testTarget(name: "MoEDistributedTests", dependencies: ["MoEDistributed", "MoEModels", "MoE", "MoECore", "_TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["moe", "MoEModels", "MoECore", "_TestSupport"]),
        .testTarget(name: "MoEServerTests", dependencies: [
            "MoEServer", "MoEGenerate", "MoEModels", "MoECore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
