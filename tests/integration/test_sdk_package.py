#!/usr/bin/python3
"""The terminal SDK as a package, consumed the ways a terminal vendor would (terminal-sdk/README.md "Using the SDK
in a terminal's own build"):

- an SDK-only configure (-DCOCONUT_COMPONENTS=sdk) needs none of the clearing's or the tools' dependencies and
  defines only the SDK's libraries; an unknown COCONUT_COMPONENTS is refused by name;
- `cmake --install BUILD --component sdk` puts every public header of the SDK's libraries, coconut/version.hpp,
  CoconutConfig.cmake + CoconutConfigVersion.cmake and coconut-sdk.pc under a fresh prefix;
- find_package(Coconut) gives the imported targets and the version, and refuses another major.minor;
- one file including every installed header compiles and links with `pkg-config --cflags --libs coconut-sdk`
  alone (no -include, -Werror on), and reports the project's version;
- examples/ configures and builds as a project of its own against the installed package, with none of the
  project's compile options leaking into it; its programs pay by card images run in process;
- (with --shared) a project that vendors the SDK with add_subdirectory builds against Coconut::sdk, and none of
  the project's compile options reach its own target.

With --shared, the package comes from an SDK-only build of shared libraries (-DBUILD_SHARED_LIBS=ON) made in
WORK/sdk-shared-build instead of from BUILD, and a vendoring project is built in WORK/vendored (both kept
between runs, so a rerun only rebuilds what changed).

usage: test_sdk_package.py PATH/TO/coconut-vcard --source DIR --build DIR --work DIR --version X.Y.Z
                           --header-dirs DIR... [--launcher ccache] [--shared]
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys

from pcsc_harness import card_profile, check_equal, log, personalize, psam_profile, run

SDK_LIBRARIES = ["sdk", "tls", "iso8583", "cos", "card_crypto", "apdu", "core"]
# What only the rest of the project needs: none of it may be looked for by an SDK-only configure.
NOT_FOR_THE_SDK = ["LMDB_", "SODIUM_", "NATS_", "ZSTD_", "LIBXML2_", "COCONUT_CLI_LIBXML2_", "CLI11_DIR", "doctest_DIR"]


def cmake_configure(source, build, *definitions, check=True):
    return run(["cmake", "-S", source, "-B", build, "-G", "Ninja", *definitions], check=check, timeout=300)


def test_sdk_only_configure(args):
    log("an SDK-only configure needs only the SDK's dependencies and defines only its libraries")
    build = os.path.join(args.work, "sdk-only")
    cmake_configure(args.source, build, "-DCOCONUT_COMPONENTS=sdk")
    with open(os.path.join(build, "CMakeCache.txt"), encoding="utf-8") as cache:
        looked_for = [line.split(":")[0] for line in cache if any(line.startswith(name) for name in NOT_FOR_THE_SDK)]
    check_equal("cache entries of dependencies the SDK does not use", looked_for, [])
    with open(os.path.join(build, "build.ninja"), encoding="utf-8") as ninja:
        built = sorted(set(re.findall(r"^build \S*?/(lib[a-z0-9_]+\.a|coconut-[a-z]+|test_[a-z0-9_]+): ", ninja.read(), re.M)))
    check_equal("what an SDK-only build builds", built, sorted(f"libcoconut_{name}.a" for name in SDK_LIBRARIES))

    bad = cmake_configure(args.source, os.path.join(args.work, "sdk-bad"), "-DCOCONUT_COMPONENTS=clearing", check=False)
    if bad.returncode == 0 or "COCONUT_COMPONENTS is 'clearing'" not in bad.stderr:
        raise AssertionError(f"COCONUT_COMPONENTS=clearing: exit {bad.returncode}, expected a refusal naming it\n{bad.stderr}")
    log("  ok  COCONUT_COMPONENTS=clearing refused")


def build_shared_sdk(args, build):
    log("an SDK-only build of shared libraries")
    launcher = [f"-DCMAKE_CXX_COMPILER_LAUNCHER={args.launcher}"] if args.launcher else []
    cmake_configure(args.source, build, "-DCOCONUT_COMPONENTS=sdk", "-DBUILD_SHARED_LIBS=ON", *launcher)
    run(["cmake", "--build", build, "-j", "2"], timeout=1800)
    args.build = build
    log("  ok  built")


def test_vendored(args):
    log("a terminal's own project vendors the SDK with add_subdirectory and COCONUT_COMPONENTS=sdk")
    project = os.path.join(args.work, "vendored")
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, "CMakeLists.txt"), "w", encoding="utf-8") as out:
        out.write(f"""cmake_minimum_required(VERSION 3.25)
project(vendored_terminal LANGUAGES CXX)
set(COCONUT_COMPONENTS sdk CACHE STRING "")
add_subdirectory({args.source} coconut)
add_executable(purchase {args.source}/examples/purchase.cpp)
target_link_libraries(purchase PRIVATE Coconut::sdk Coconut::cos)
target_compile_options(purchase PRIVATE -Werror)
""")
    build = os.path.join(project, "build")
    launcher = [f"-DCMAKE_CXX_COMPILER_LAUNCHER={args.launcher}"] if args.launcher else []
    cmake_configure(project, build, "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *launcher)
    run(["cmake", "--build", build, "-j", "2", "--target", "purchase"], timeout=1800)
    with open(os.path.join(build, "compile_commands.json"), encoding="utf-8") as commands:
        entries = [entry for entry in json.load(commands) if entry["file"].endswith("examples/purchase.cpp")]
    check_equal("compile commands of the vendor's own target", len(entries), 1)
    for leak in ["-include", "-Wall", "-Wextra", "-Wpedantic"]:
        if leak in entries[0]["command"]:
            raise AssertionError(f"'{leak}' reached the vendor's target from the SDK: {entries[0]['command']}")
    log("  ok  built against Coconut::sdk of the vendored tree; none of the project's options reached it")


def installed_headers(args, prefix):
    """Every public header of the SDK's libraries must be installed; returns them relative to include/."""
    headers = ["coconut/version.hpp"]
    for directory in args.header_dirs:
        root = os.path.join(args.source, directory)
        headers += [os.path.relpath(path, root) for path in glob.glob(os.path.join(root, "coconut", "**", "*.hpp"), recursive=True)]
    missing = [header for header in headers if not os.path.isfile(os.path.join(prefix, "include", header))]
    check_equal("public headers missing from the installed SDK", missing, [])
    return sorted(headers)


def test_install(args, prefix):
    log("cmake --install --component sdk puts the package under a fresh prefix")
    run(["cmake", "--install", args.build, "--component", "sdk", "--prefix", prefix])
    expected = ["lib/cmake/Coconut/CoconutConfig.cmake", "lib/cmake/Coconut/CoconutConfigVersion.cmake",
                "lib/cmake/Coconut/CoconutTargets.cmake", "lib/pkgconfig/coconut-sdk.pc"]
    missing = [path for path in expected if not os.path.isfile(os.path.join(prefix, path))]
    suffix = "so" if args.shared else "a"
    missing += [f"lib/libcoconut_{name}.{suffix}" for name in SDK_LIBRARIES
                if not os.path.exists(os.path.join(prefix, f"lib/libcoconut_{name}.{suffix}"))]
    check_equal("package files missing", missing, [])
    headers = installed_headers(args, prefix)
    log(f"  ok  {len(headers)} headers, the libraries, CoconutConfig.cmake and coconut-sdk.pc installed")
    # Boost 1.74's asio/awaitable.hpp needs <utility> first under C++20; the project's own sources get it
    # from a compile option a consumer does not have, so an installed header using it must include it itself.
    for header in headers:
        with open(os.path.join(prefix, "include", header), encoding="utf-8") as text:
            includes = re.findall(r"^#include <([^>]+)>", text.read(), re.M)
        awaitable = [i for i, name in enumerate(includes) if name in ("boost/asio/awaitable.hpp", "boost/asio.hpp")]
        if awaitable and "utility" not in includes[:awaitable[0]]:
            raise AssertionError(f"{header} includes {includes[awaitable[0]]} without <utility> before it")
    return headers


def test_find_package(args, prefix):
    log("find_package(Coconut) gives the imported targets and the version")
    project = os.path.join(args.work, "find-package")
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, "CMakeLists.txt"), "w", encoding="utf-8") as out:
        out.write(f"""cmake_minimum_required(VERSION 3.25)
project(find_coconut LANGUAGES CXX)
find_package(Coconut {args.version} EXACT REQUIRED COMPONENTS sdk iso8583 cos)
foreach(name {" ".join(SDK_LIBRARIES)} version)
  if(NOT TARGET Coconut::${{name}})
    message(FATAL_ERROR "no target Coconut::${{name}}")
  endif()
endforeach()
find_package(Coconut 99.0 QUIET)
if(Coconut_FOUND)
  message(FATAL_ERROR "find_package(Coconut 99.0) accepted version ${{Coconut_VERSION}}")
endif()
""")
    cmake_configure(project, os.path.join(project, "build"), f"-DCMAKE_PREFIX_PATH={prefix}")
    log("  ok  Coconut::{" + ",".join(SDK_LIBRARIES) + ",version}, version " + args.version + "; 99.0 refused")


def test_pkg_config(args, prefix, headers):
    log("one file with every installed header builds with pkg-config's flags alone")
    environment = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
    version = subprocess.run(["pkg-config", "--modversion", "coconut-sdk"], env=environment, capture_output=True, text=True)
    check_equal("pkg-config --modversion coconut-sdk", version.stdout.strip(), args.version)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "coconut-sdk"], env=environment, capture_output=True, text=True,
                           check=True).stdout.split()
    source = os.path.join(args.work, "consumer.cpp")
    with open(source, "w", encoding="utf-8") as out:
        out.write("".join(f"#include <{header}>\n" for header in headers))
        out.write("""#include <cstdio>
int main() {
    auto endpoint = coconut::sdk::parse_clearing_endpoint("127.0.0.1:8583");
    std::printf("%s %s\\n", coconut::version.data(), endpoint ? coconut::sdk::to_string(*endpoint).c_str() : "-");
}
""")
    program = os.path.join(args.work, "consumer")
    compiler = [args.launcher] if args.launcher else []
    run([*compiler, "c++", "-std=c++20", "-Wall", "-Wextra", "-Werror", source, "-o", program, *flags], timeout=300)
    # A shared SDK under a prefix the dynamic linker does not search: the program finds it as a vendor's would.
    libraries = dict(os.environ, LD_LIBRARY_PATH=os.path.join(prefix, "lib"))
    output = subprocess.run([program], env=libraries, capture_output=True, text=True, timeout=60)
    check_equal("the consumer's output", (output.stdout + output.stderr).strip(), f"{args.version} 127.0.0.1:8583")
    log(f"  ok  {len(headers)} headers compiled, linked, version {args.version}")


def test_examples(args, prefix):
    log("examples/ builds against the installed package as a project of its own")
    build = os.path.join(args.work, "examples")
    launcher = [f"-DCMAKE_CXX_COMPILER_LAUNCHER={args.launcher}"] if args.launcher else []
    cmake_configure(os.path.join(args.source, "examples"), build, f"-DCMAKE_PREFIX_PATH={prefix}",
                    "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Wpedantic -Werror", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *launcher)
    run(["cmake", "--build", build, "-j", "2"], timeout=600)
    with open(os.path.join(build, "compile_commands.json"), encoding="utf-8") as commands:
        text = commands.read()
    for leak in ["-include", "utility", "-Werror=", "-fsanitize"]:
        if leak in text:
            raise AssertionError(f"'{leak}' reached the examples' compile commands from the package:\n{text}")
    log("  ok  purchase, bus_tap, clinic_payment built; no compile option of the project reached them")
    return build


def test_examples_pay(args, build):
    log("the examples pay with card images run in process")
    card = personalize(args.vcard, args.work, "card", card_profile(balance_fen=1000))
    psam = personalize(args.vcard, args.work, "psam", psam_profile())
    queue = os.path.join(args.work, "terminal-queue.log")

    def example(*argv, code=0):
        result = run([os.path.join(build, argv[0]), *argv[1:]], check=False)
        check_equal(f"{argv[0]} exit code ({result.stderr.strip()})", result.returncode, code)
        return (result.stdout + result.stderr).strip()

    check_equal("purchase", example("purchase", card, psam, "150", queue), "paid 150 fen, balance 1000 -> 850 fen, queued for upload")
    check_equal("bus tap", example("bus_tap", card, psam, "8", "3", queue), "gate opens: charged_flat, 200 fen charged, balance 650 fen")
    check_equal("the same tap again", example("bus_tap", card, psam, "8", "3", queue),
                "gate opens: repeat_no_charge, 0 fen charged, balance 650 fen")
    refusal = example("purchase", card, psam, "5000", queue, code=1)
    if "insufficient_balance" not in refusal:
        raise AssertionError(f"a purchase above the balance: {refusal!r} does not say insufficient_balance")
    refusal = example("clinic_payment", card, psam, "100", "127.0.0.1:1", "CLINIC01",
                      os.path.join(args.work, "no-ca.pem"), "cert.pem", "key.pem", queue, code=1)
    if "no-ca.pem" not in refusal:
        raise AssertionError(f"clinic_payment without its CA file: {refusal!r} does not name it")
    check_equal("usage", example("purchase", code=2).startswith("usage: purchase CARD PSAM AMOUNT_FEN"), True)
    log("  ok  150 fen paid, 200 fen tapped, the repeat free, a purchase over the balance and a missing CA refused")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("vcard")
    parser.add_argument("--source", required=True)
    parser.add_argument("--build", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--header-dirs", nargs="+", required=True)
    parser.add_argument("--launcher", default="")
    parser.add_argument("--shared", action="store_true")
    args = parser.parse_args()
    # The builds of the SDK itself are kept between runs (their ccache hits need the same paths).
    kept = os.path.join(args.work, "sdk-shared-build")
    for entry in os.listdir(args.work) if os.path.isdir(args.work) else []:
        path = os.path.join(args.work, entry)
        if entry in ("sdk-shared-build", "vendored"):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.makedirs(args.work, exist_ok=True)
    prefix = os.path.join(args.work, "prefix")
    try:
        test_sdk_only_configure(args)
        if args.shared:
            build_shared_sdk(args, kept)
        headers = test_install(args, prefix)
        test_find_package(args, prefix)
        test_pkg_config(args, prefix, headers)
        build = test_examples(args, prefix)
        test_examples_pay(args, build)
        if args.shared:
            test_vendored(args)
    except (AssertionError, OSError, subprocess.SubprocessError) as failure:
        print(f"FAILED: {failure}\n(work directory kept: {args.work})", file=sys.stderr, flush=True)
        sys.exit(1)
    log("PASSED")


if __name__ == "__main__":
    main()
