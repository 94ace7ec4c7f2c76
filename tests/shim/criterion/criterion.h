/*
 * A minimal stand-in for <criterion/criterion.h>, used to run the same test
 * files where Criterion itself cannot run: under ThreadSanitizer, whose
 * memory layout collides with the fixed-address arena Criterion maps at
 * start-up (Criterion issue #274: "Could not initialize inheritable
 * arena"). It implements only what tests/ uses: Test(suite, name), the
 * cr_assert family and cr_log_info. tests/shim/runner.c runs each test in a
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
void crs_log(const char *format, ...);

#define Test(suite, name)                                                                     \
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

#define cr_log_info(...) crs_log(__VA_ARGS__)

#endif
