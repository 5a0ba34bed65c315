// The refund reference of a clinic payment as coconut-terminal prints it (clinic-pay's receipt and its
// --json "refund_reference") and reads it back (clinic-refund --receipt FILE). The fields are documented in
// terminal-sdk/README.md "Clinic refunds".
#pragma once

#include <coconut/core/result.hpp>
#include <coconut/sdk/clinic_refund.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace coconut::terminal_cli {

// {"card": ASN (20 digits), "hold": {"terminal_id", "batch", "stan"} | null, "medical_fen",
//  "purchase": {"psam_terminal_id" (12 digits), "terminal_serial"} | null, "purse_fen", "cash_fen"}
nlohmann::json to_json(const sdk::ClinicRefundReference& reference);
// The receipt's lines naming the parts: "refund ref.  card …", "  hold CLINIC01 batch 000001 STAN 000031", …
std::string to_text(const sdk::ClinicRefundReference& reference);
// From the object to_json writes, or a document holding it under "refund_reference" (clinic-pay --json).
// The error names the member that is missing or wrong.
Result<sdk::ClinicRefundReference, std::string> reference_from_json(const nlohmann::json& document);
// The same from a file (the error names the file).
Result<sdk::ClinicRefundReference, std::string> read_receipt(const std::filesystem::path& path);

}  // namespace coconut::terminal_cli
