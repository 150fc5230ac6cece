/// A template expression, as jinja2 parses it.
indirect enum JinjaExpr: Sendable {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case tuple([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    case attribute(JinjaExpr, String)
    case item(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
    case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)])
    /// `value is [not] name(args)`.
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
    /// `not`, `-` or `+`.
    case unary(String, JinjaExpr)
    /// `+ - * / // % ** ~ and or`.
    case binary(String, JinjaExpr, JinjaExpr)
    /// A chain of comparisons: `a < b <= c`, `x in y`, `x not in y`.
    case compare(JinjaExpr, [(String, JinjaExpr)])
    /// `then if condition else otherwise` (no else: undefined).
    case conditional(then: JinjaExpr, condition: JinjaExpr, otherwise: JinjaExpr?)
}

/// A template statement.
indirect enum JinjaStmt: Sendable {
    case text(String)
    case output(JinjaExpr)
    case branch([(JinjaExpr, [JinjaStmt])], otherwise: [JinjaStmt])
    case loop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaStmt], otherwise: [JinjaStmt])
    /// `{% set a, b = ... %}` or `{% set ns.attr = ... %}` (`attribute` non-nil).
    case assign(targets: [String], attribute: String?, JinjaExpr)
    /// `{% set name %}...{% endset %}`, its output piped through the filters.
    case assignBlock(String, filters: [(String, [JinjaExpr], [(String, JinjaExpr)])], body: [JinjaStmt])
    case macro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaStmt])
    /// `{% call name(args) %}body{% endcall %}`: the body is the macro's `caller()`.
    case callBlock(JinjaExpr, body: [JinjaStmt])
    case filterBlock([(String, [JinjaExpr], [(String, JinjaExpr)])], body: [JinjaStmt])
    case breakLoop
    case continueLoop
}
