// What the commands print: money in CNY, a progress bar on a terminal (plain lines otherwise), the day's
// counts and the verification.
#pragma once

#include "simulate.hpp"
#include "verify.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace coconut::cli {

std::string format_fen(std::int64_t fen);  // "1,234.50 CNY"

class Progress {
public:
    explicit Progress(std::string label);
    // fraction 0..1; redraws at most every 100 ms on a TTY, else prints nothing until done().
    void update(double fraction, const std::string& text);
    void step(const std::string& text);  // a finished phase: one line
    void done();

private:
    std::string label_;
    bool tty_;
    std::chrono::steady_clock::time_point last_draw_{};
    bool drawn_ = false;
};

void print_day(std::ostream& out, const DayReport& day);
// The airport counter's tourist cards (nothing when none were sold).
void print_tourists(std::ostream& out, const TouristReport& tourists);
// The clinics' same-day refunds (nothing when the day planned none).
void print_clinic_refunds(std::ostream& out, const ClinicRefundReport& refunds);
void print_verification(std::ostream& out, const Verification& v, bool every_participant);
// The same as JSON (summary.json of demo and simulate, read by the tests).
nlohmann::json day_json(const DayReport& day);
nlohmann::json tourists_json(const TouristReport& tourists);
nlohmann::json clinic_refunds_json(const ClinicRefundReport& refunds);
nlohmann::json verification_json(const Verification& v);

}  // namespace coconut::cli
