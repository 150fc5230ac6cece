// What the readers' sources name but the fuzz build leaves out (it has no model families).
enum Architectures { static let modelTypes: [String] = [] }
