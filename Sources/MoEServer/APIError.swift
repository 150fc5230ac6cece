import Foundation
import MoEModels

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with
/// its HTTP status.
public struct APIError: Error, Sendable, Equatable {
    public var status: Int
    public var message: String
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, `rate_limit_error`
    /// or `server_error`.
    public var type: String
    /// The request field at fault, when there is one.
    public var param: String?
    public var code: String?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    /// 400: the request is malformed, names a field with the wrong type or range, or asks for
    /// more than the model or server allows.
    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    /// 401: a missing or wrong API key.
    static let unauthorized = APIError(
        status: 401, message: "Incorrect API key provided. Pass it as 'Authorization: Bearer KEY'.",
        type: "invalid_request_error", code: "invalid_api_key")

    /// The JSON body, fields in OpenAI's order.
    var body: Data {
        let error = object(("message", .str(message)), ("type", .str(type)), ("param", .optionalString(param)),
                           ("code", .optionalString(code)))
        return Data(object(("error", error)).jsonText.utf8)
    }
}
