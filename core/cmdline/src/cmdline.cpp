// The binaries' shared command-line conventions (cmdline.hpp).
#include <coconut/cmdline/cmdline.hpp>

#include <cstring>
#include <iostream>
#include <memory>

#ifndef COCONUT_VERSION
#define COCONUT_VERSION "unknown"
#endif
#ifndef COCONUT_GIT_DESCRIBE
#define COCONUT_GIT_DESCRIBE ""
#endif

namespace coconut::cmdline {
namespace {

void warn_renamed(std::string_view program, const Rename& rename, std::string_view where) {
    std::cerr << program << ": warning: " << rename.old_name << where << " is a deprecated name, use " << rename.new_name
              << " (the old name goes in a later release)\n";
}

// A config file's keys as `command`'s options: top-level keys only, each the long name of one of its
// options (renamed ones warned about), handed to CLI11 as `command`'s.
class CommandConfig : public CLI::ConfigTOML {
public:
    CommandConfig(CLI::App* command, std::vector<Rename> renames) : command_(command), renames_(std::move(renames)) {}

    std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
        std::vector<CLI::ConfigItem> items = CLI::ConfigTOML::from_config(input);
        std::vector<CLI::ConfigItem> out;
        for (CLI::ConfigItem& item : items) {
            if (item.name == "++" || item.name == "--" || !item.parents.empty())
                throw CLI::ConfigError("sections are not read: write " + command_->get_name() + "'s options as top-level keys");
            const CLI::Option* option = command_->get_option_no_throw("--" + item.name);
            if (option == nullptr || item.name.size() < 2)
                throw CLI::ConfigError("unknown key '" + item.name + "' (no option --" + item.name + " in " + command_->get_name() +
                                       " --help)");
            if (!option->get_configurable()) throw CLI::ConfigError("key '" + item.name + "' is not allowed in a config file");
            for (const Rename& rename : renames_) {
                if (rename.old_name == "--" + item.name) warn_renamed(command_->get_parent()->get_name(), rename, " (config key)");
            }
            item.parents = {command_->get_name()};
            out.push_back(std::move(item));
        }
        return out;
    }

private:
    CLI::App* command_;
    std::vector<Rename> renames_;
};

std::string config_file_of(CLI::App& app) {
    const CLI::Option* config = app.get_config_ptr();
    if (config == nullptr || config->count() == 0) return {};
    return config->as<std::string>();
}

void set_footer(CLI::App* app, std::string_view exit_codes) {
    const std::string own = app->get_footer();
    app->footer(own.empty() ? std::string(exit_codes) : own + "\n\n" + std::string(exit_codes));
    for (CLI::App* sub : app->get_subcommands({})) set_footer(sub, exit_codes);
}

}  // namespace

std::string version_text() {
    const std::string_view describe = COCONUT_GIT_DESCRIBE;
    return describe.empty() ? std::string(COCONUT_VERSION) : std::string(COCONUT_VERSION) + " (" + std::string(describe) + ")";
}

void set_conventions(CLI::App& app, std::string_view program, std::string_view exit_codes) {
    app.set_version_flag("--version", std::string(program) + " " + version_text(), "print the version and exit");
    set_footer(&app, exit_codes);
}

std::optional<int> parse(CLI::App& app, int argc, char** argv, std::string_view program, std::span<const Rename> renames) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ConfigError& e) {
        std::cerr << program << ": config file " << config_file_of(app) << ": " << e.what() << "\n";
        return exit_usage;
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        if (const std::string file = config_file_of(app); !file.empty())
            std::cerr << program << ": (options from the command line and the config file " << file << ")\n";
        return exit_usage;
    }
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        for (const Rename& rename : renames) {
            if (arg == rename.old_name ||
                (arg.starts_with(rename.old_name) && arg.size() > rename.old_name.size() && arg[rename.old_name.size()] == '='))
                warn_renamed(program, rename, "");
        }
    }
    return std::nullopt;
}

void add_config_file(CLI::App& app, CLI::App* command, std::span<const Rename> renames) {
    app.set_config("--config", "",
                   "TOML (or INI) file of " + command->get_name() +
                       "'s options: top-level keys, the long names without dashes (iso-listen = \"0.0.0.0:8583\"); "
                       "the command line overrides it");
    app.config_formatter(std::make_shared<CommandConfig>(command, std::vector<Rename>(renames.begin(), renames.end())));
    app.allow_config_extras(CLI::config_extras_mode::error);
    // `PROGRAM serve --config FILE` as well as `PROGRAM --config FILE serve`.
    command->fallthrough();
    command->footer(
        "Options may also come from a config file: --config FILE (TOML, these long names without the dashes as "
        "keys; the command line wins). Check one with: config check FILE.");
}

CLI::App* add_config_check_command(CLI::App& app, std::string& file) {
    auto* config = app.add_subcommand("config", "config files of serve (--config FILE)");
    config->require_subcommand(1);
    auto* check =
        config->add_subcommand("check",
                               "check a config file: unknown keys and bad values exit 2; a good one prints the effective settings");
    check->add_option("FILE", file, "TOML (or INI) file of serve's options")->required();
    return check;
}

int check_config(CLI::App& app, CLI::App* command, const std::string& file, std::string_view program,
                 const std::function<std::optional<std::string>()>& semantic) {
    std::vector<std::string> args{file, "--config", command->get_name()};  // CLI11 takes them in reverse
    try {
        app.parse(args);
    } catch (const CLI::ConfigError& e) {
        std::cerr << program << ": " << file << ": " << e.what() << "\n";
        return exit_usage;
    } catch (const CLI::ParseError& e) {
        std::cerr << program << ": " << file << ": " << e.what() << "\n";
        return exit_usage;
    }
    if (auto problem = semantic()) {
        std::cerr << program << ": " << file << ": " << *problem << "\n";
        return exit_usage;
    }
    std::cout << "# " << file << ": ok; the effective settings of " << command->get_name() << ":\n" << command->config_to_str(true, false);
    return exit_ok;
}

void add_log_options(CLI::App* command, LogFlags& flags) {
    command->add_option("--log-format", flags.format, "log lines as text or json (one JSON object per line)")
        ->capture_default_str()
        ->check(CLI::IsMember({"text", "json"}))
        ->group("Logs");
    command
        ->add_option("--log-time", flags.time,
                     "time on each log line: utc (RFC 3339, milliseconds), none, or auto: utc unless stderr is the "
                     "journal (JOURNAL_STREAM), which stamps lines itself")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "utc", "none"}))
        ->group("Logs");
    command->add_option("--log-level", flags.level, "lowest level logged: debug, info, warning or error")
        ->capture_default_str()
        ->check(CLI::IsMember({"debug", "info", "warning", "error"}))
        ->group("Logs");
}

void configure_log(std::string_view program, const LogFlags& flags) {
    log::Settings settings;
    settings.program = std::string(program);
    settings.format = log::parse_format(flags.format).value_or(log::Format::text);
    settings.time = log::parse_time(flags.time).value_or(log::Time::automatic);
    settings.level = log::parse_level(flags.level).value_or(log::Level::info);
    log::configure(settings);
}

}  // namespace coconut::cmdline
