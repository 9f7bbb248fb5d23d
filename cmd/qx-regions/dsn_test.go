package main

import (
	"errors"
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		name, dsn string
		secrets   []string // none of these may remain
		want      string   // the whole result, when it matters
	}{
		{"url", "postgres://qx:pw-1234@db:5432/app?sslmode=verify-full", []string{"pw-1234"},
			"postgres://qx:xxxxx@db:5432/app?sslmode=verify-full"},
		{"url without password", "postgres://qx@db/app", nil, "postgres://qx@db/app"},
		{"url without userinfo", "postgresql://db:5432/app", nil, "postgresql://db:5432/app"},
		{"url hash", "postgres://u:p#ss-word@h/db", []string{"p#ss", "ss-word"}, "postgres://u:xxxxx@h/db"},
		{"url question mark", "postgres://u:p?ss=word@h/db", []string{"p?ss", "ss=word"}, "postgres://xxxxx@h/db"},
		{"url slash", "postgres://u:pa/ss-word@h:5432/db", []string{"pa/ss", "ss-word"}, "postgres://xxxxx@h:5432/db"},
		{"url at", "postgres://u:p@ss-word@h/db", []string{"ss-word"}, "postgres://u:xxxxx@h/db"},
		{"url everything", "postgres://u:a@b/c?d#e:f'g h@h/db", []string{"a@b", "c?d", "e:f", "g h"}, "postgres://xxxxx@h/db"},
		{"url colon", "postgres://u:pa:ss-word@h/db", []string{"pa:ss", "ss-word"}, "postgres://u:xxxxx@h/db"},
		{"url escaped", "postgres://u:p%40ss%2Fword@h/db", []string{"p%40ss", "ss%2Fword"}, "postgres://u:xxxxx@h/db"},
		{"url bad escape", "postgres://u:p%zzss-word@h/db", []string{"%zz", "ss-word"}, "postgres://u:xxxxx@h/db"},
		{"url query password", "postgres://h/db?sslmode=disable&password=qp-1234&application_name=x",
			[]string{"qp-1234"}, "postgres://h/db?sslmode=disable&password=xxxxx&application_name=x"},
		{"url query password with &", "postgres://h/db?password=qp&1234&sslmode=disable",
			[]string{"1234"}, "postgres://h/db?password=xxxxx&sslmode=disable"},
		{"url query sslpassword encoded key", "postgres://h/db?ssl%70assword=kp-1234", []string{"kp-1234"}, ""},
		{"url query upper case", "postgres://h/db?PASSWORD=qp-1234", []string{"qp-1234"}, ""},
		{"url at in query", "postgres://u:pw-1234@h/db?application_name=a@b", []string{"pw-1234"}, ""},
		{"url broken port", "postgres://u:pw-1234@h:port/db", []string{"pw-1234"}, "postgres://u:xxxxx@h:port/db"},
		{"kv", "host=h user=u password=pw-1234 dbname=d", []string{"pw-1234"}, "host=h user=u password=xxxxx dbname=d"},
		{"kv spaces around =", "host=h password = pw-1234 dbname=d", []string{"pw-1234"}, "host=h password = xxxxx dbname=d"},
		{"kv quoted", "host=h password='pw 1234' dbname=d", []string{"pw", "1234"}, "host=h password=xxxxx dbname=d"},
		{"kv quoted escaped quote", `host=h password='p\'w 1234' dbname=d`, []string{"p\\'w", "1234"}, "host=h password=xxxxx dbname=d"},
		{"kv quoted backslash", `password='pw\\' host=h`, []string{"pw"}, "password=xxxxx host=h"},
		{"kv unterminated quote", "host=h password='pw 1234 dbname=d", []string{"pw", "1234"}, "host=h password=xxxxx"},
		{"kv unquoted space", "host=h password=pw 1234 more dbname=d", []string{"pw", "1234", "more"}, "host=h password=xxxxx dbname=d"},
		{"kv escaped space", `host=h password=pw\ 1234 dbname=d`, []string{"pw", "1234"}, "host=h password=xxxxx dbname=d"},
		{"kv first", "password=pw-1234", []string{"pw-1234"}, "password=xxxxx"},
		{"kv sslpassword", "host=h sslpassword=kp-1234 password=pw-1234", []string{"kp-1234", "pw-1234"},
			"host=h sslpassword=xxxxx password=xxxxx"},
		{"kv tabs and case", "host=h\tPassword=pw-1234\tdbname=d", []string{"pw-1234"}, ""},
		{"kv url-looking password", "host=h password=p://w@x dbname=d", []string{"p://w", "w@x"}, "host=h password=xxxxx dbname=d"},
		{"kv no password", "host=h user=u dbname=d", nil, "host=h user=u dbname=d"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := redactDSN(tc.dsn)
			for _, s := range tc.secrets {
				if strings.Contains(got, s) {
					t.Errorf("redactDSN(%q) = %q, which still holds %q", tc.dsn, got, s)
				}
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("redactDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
			}
		})
	}
}

// FuzzRedactDSN: whatever the password, neither a URL nor a quoted
// keyword/value DSN keeps it.
func FuzzRedactDSN(f *testing.F) {
	for _, pw := range []string{"plain-pw", "p#ss", "p?ss", "p/ss", "p@ss@x", "p'ss", `p\ss`, "p ss", "p%zz", "a:b&c=d"} {
		f.Add(pw)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 6 || strings.ContainsAny(pw, "\x00") {
			return
		}
		url := "postgres://qx:" + pw + "@db.example.com:5432/app?sslmode=disable"
		if got := redactDSN(url); strings.Contains(got, pw) {
			t.Errorf("redactDSN(%q) = %q keeps the password", url, got)
		}
		quoted := strings.ReplaceAll(strings.ReplaceAll(pw, `\`, `\\`), `'`, `\'`)
		kv := "host=db.example.com user=qx password='" + quoted + "' dbname=app"
		if got := redactDSN(kv); strings.Contains(got, pw) {
			t.Errorf("redactDSN(%q) = %q keeps the password", kv, got)
		}
	})
}

func TestCheckDSN(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		for _, dsn := range []string{
			"postgres://qx:pw@db:5432/app?sslmode=disable",
			"postgres://u:p#ss@h/db", // pgx reads p#ss as the password
			"postgresql://db1:5432,db2:5433/app?target_session_attrs=read-write",
			"host=/tmp port=5432 user=postgres dbname=app password='a b'",
		} {
			if err := checkDSN("QX_REPLICATION__SOURCE_DSN", dsn); err != nil {
				t.Errorf("checkDSN(%q): %v", dsn, err)
			}
		}
	})
	tests := []struct {
		name, dsn string
		secrets   []string
	}{
		{"bad port", "postgres://u:pw-1234@h:port/db", []string{"pw-1234"}},
		{"slash in password", "postgres://u:pw/1234@h/db", []string{"pw/1234", "1234"}},
		{"at in password", "postgres://u:pw@1234@h/db", []string{"1234"}},
		{"bad escape in password", "postgres://u:pw%zz1234@h/db", []string{"%zz", "1234"}},
		{"bad sslmode", "postgres://u:pw-1234@h/db?sslmode=sometimes", []string{"pw-1234"}},
		{"kv unterminated quote", "host=h password='pw 1234", []string{"pw", "1234"}},
		{"kv space in password", "host=h password=pw 1234 dbname=d", []string{"1234"}},
		{"kv garbage", "host=h dbname", nil},
		{"not a dsn", "db.example.com", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDSN("QX_REPLICATION__SOURCE_DSN", tc.dsn)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("checkDSN(%q) = %v, want a usage error", tc.dsn, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "QX_REPLICATION__SOURCE_DSN: ") || strings.Contains(msg, "\n") {
				t.Errorf("got %q, want one line starting with the variable", msg)
			}
			for _, s := range tc.secrets {
				if strings.Contains(msg, s) {
					t.Errorf("got %q, which holds %q", msg, s)
				}
			}
		})
	}
}
