/*
 * A minimal stand-in for <criterion/criterion.h>, used to run the same test
 * files where Criterion itself cannot run: under ThreadSanitizer, whose
 * memory layout collides with the fixed-address arena Criterion maps at
 * start-up (Criterion issue #274: "Could not initialize inheritable
 * arena"). It implements only what tests/ uses: Test(suite, name, ...)
 * (options such as .timeout are accepted and ignored: the runner's
 * --timeout bounds every test), the cr_assert family, the cr_expect family
 * (a failure is reported, the test goes on and fails at its end),
 * cr_log_info and cr_log_warn. tests/shim/runner.c runs each test in a
 * forked child, as Criterion does. Assertion messages are optional and
 * printf-style, as in Criterion.
 */
#ifndef RESPOOL_CRITERION_SHIM_H
#define RESPOOL_CRITERION_SHIM_H

#include <stdbool.h>
#include <string.h>

void crs_register(const char *suite, const char *name, void (*fn)(void));
/* Reports a failed assertion (message: optional printf format + args,
 * then a trailing "" the macros add) and ends the test. */
_Noreturn void crs_fail(const char *file, int line, const char *expression, const char *format,
                        ...);
/* The same report for a cr_expect: the test goes on, and fails at its end. */
void crs_expect_fail(const char *file, int line, const char *expression, const char *format,
                     ...);
void crs_log(const char *format, ...);

/* Test(suite, name) or Test(suite, name, options): the 0 appended keeps
 * CRS_TEST's "..." non-empty, as C11 requires. */
#define Test(...) CRS_TEST(__VA_ARGS__, 0)
#define CRS_TEST(suite, name, ...)                                                            \
    static void crs_test_##suite##_##name(void);                                              \
    __attribute__((constructor)) static void crs_register_##suite##_##name(void)              \
    {                                                                                         \
        crs_register(#suite, #name, crs_test_##suite##_##name);                               \
    }                                                                                         \
    static void crs_test_##suite##_##name(void)

/* First argument of a list, and the rest (with "" appended so it is never
 * empty: C11 requires at least one argument for a macro's "..."). */
#define CRS_FIRST(x, ...) x
#define CRS_REST(x, ...) __VA_ARGS__

#define CRS_CHECK(ok, text, ...)                                                              \
    do {                                                                                      \
        if (!(ok))                                                                            \
            crs_fail(__FILE__, __LINE__, text, CRS_REST(__VA_ARGS__, ""));                    \
    } while (0)

#define CRS_EXPECT(ok, text, ...)                                                             \
    do {                                                                                      \
        if (!(ok))                                                                            \
            crs_expect_fail(__FILE__, __LINE__, text, CRS_REST(__VA_ARGS__, ""));             \
    } while (0)

#define cr_assert(...) CRS_CHECK(CRS_FIRST(__VA_ARGS__, 0), #__VA_ARGS__, __VA_ARGS__)
#define cr_assert_not(...) CRS_CHECK(!(CRS_FIRST(__VA_ARGS__, 0)), #__VA_ARGS__, __VA_ARGS__)
#define cr_assert_null(...) CRS_CHECK((CRS_FIRST(__VA_ARGS__, 0)) == NULL, #__VA_ARGS__, __VA_ARGS__)
#define cr_assert_not_null(...)                                                               \
    CRS_CHECK((CRS_FIRST(__VA_ARGS__, 0)) != NULL, #__VA_ARGS__, __VA_ARGS__)

#define CRS_COMPARE(op, a, ...)                                                               \
    CRS_CHECK((a)op(CRS_FIRST(__VA_ARGS__, 0)), #a " " #op " " #__VA_ARGS__, __VA_ARGS__)
#define cr_assert_eq(a, ...) CRS_COMPARE(==, a, __VA_ARGS__)
#define cr_assert_neq(a, ...) CRS_COMPARE(!=, a, __VA_ARGS__)
#define cr_assert_lt(a, ...) CRS_COMPARE(<, a, __VA_ARGS__)
#define cr_assert_leq(a, ...) CRS_COMPARE(<=, a, __VA_ARGS__)
#define cr_assert_gt(a, ...) CRS_COMPARE(>, a, __VA_ARGS__)
#define cr_assert_geq(a, ...) CRS_COMPARE(>=, a, __VA_ARGS__)

#define cr_assert_str_eq(a, ...)                                                              \
    CRS_CHECK(strcmp((a), (CRS_FIRST(__VA_ARGS__, 0))) == 0, #a " == " #__VA_ARGS__, __VA_ARGS__)
#define cr_assert_str_neq(a, ...)                                                             \
    CRS_CHECK(strcmp((a), (CRS_FIRST(__VA_ARGS__, 0))) != 0, #a " != " #__VA_ARGS__, __VA_ARGS__)
#define cr_assert_str_empty(...)                                                              \
    CRS_CHECK((CRS_FIRST(__VA_ARGS__, 0))[0] == '\0', #__VA_ARGS__, __VA_ARGS__)

/* cr_expect_*: as cr_assert_*, reported through CRS_EXPECT. */
#define cr_expect(...) CRS_EXPECT(CRS_FIRST(__VA_ARGS__, 0), #__VA_ARGS__, __VA_ARGS__)
#define cr_expect_null(...) CRS_EXPECT((CRS_FIRST(__VA_ARGS__, 0)) == NULL, #__VA_ARGS__, __VA_ARGS__)
#define cr_expect_not_null(...)                                                               \
    CRS_EXPECT((CRS_FIRST(__VA_ARGS__, 0)) != NULL, #__VA_ARGS__, __VA_ARGS__)
#define CRS_EXPECT_COMPARE(op, a, ...)                                                        \
    CRS_EXPECT((a)op(CRS_FIRST(__VA_ARGS__, 0)), #a " " #op " " #__VA_ARGS__, __VA_ARGS__)
#define cr_expect_eq(a, ...) CRS_EXPECT_COMPARE(==, a, __VA_ARGS__)
#define cr_expect_neq(a, ...) CRS_EXPECT_COMPARE(!=, a, __VA_ARGS__)
#define cr_expect_lt(a, ...) CRS_EXPECT_COMPARE(<, a, __VA_ARGS__)
#define cr_expect_leq(a, ...) CRS_EXPECT_COMPARE(<=, a, __VA_ARGS__)
#define cr_expect_gt(a, ...) CRS_EXPECT_COMPARE(>, a, __VA_ARGS__)
#define cr_expect_geq(a, ...) CRS_EXPECT_COMPARE(>=, a, __VA_ARGS__)
#define cr_expect_str_eq(a, ...)                                                              \
    CRS_EXPECT(strcmp((a), (CRS_FIRST(__VA_ARGS__, 0))) == 0, #a " == " #__VA_ARGS__, __VA_ARGS__)

#define cr_log_info(...) crs_log(__VA_ARGS__)
#define cr_log_warn(...) crs_log(__VA_ARGS__)

#endif
